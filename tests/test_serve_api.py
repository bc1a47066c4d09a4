"""`q3tts serve` with the real OpenAI client: the audio it returns is `q3tts synthesize`'s, byte
for byte, whole and streamed; the other formats, the models list, health, and voice clones."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
from serve_helpers import MODEL_ID, served, synthesize  # tests/ on sys.path

openai = pytest.importorskip("openai")

TEXT = "Hello world."
SEED = 3
FRAMES = 30
CLI_ARGS = ["--text", TEXT, "--language", "english", "--seed", SEED, "--max-new-tokens", FRAMES]
EXTRA = {"seed": SEED, "max_new_tokens": FRAMES, "language": "english"}


@pytest.fixture(scope="module")
def cv(checkpoints):
    with served(checkpoints["custom_voice"][1]) as (srv, app, model):
        yield srv, app, model


@pytest.fixture(scope="module")
def client(cv):
    with openai.OpenAI(base_url=cv[0].url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def synthesized(checkpoints, tmp_path_factory):
    """`q3tts synthesize` for the same request: the wav file, and the streamed PCM on stdout."""
    model = checkpoints["custom_voice"][1]
    out = tmp_path_factory.mktemp("synth") / "offline.wav"
    code, _, err = synthesize("--model", model, "--speaker", "alice", *CLI_ARGS, "--out", out)
    assert code == 0, err
    code, pcm, err = synthesize("--model", model, "--speaker", "alice", *CLI_ARGS, "--stream", "--out", "-")
    assert code == 0, err
    return out.read_bytes(), pcm


def test_openai_speech_create_returns_the_synthesize_wav(client, synthesized):
    got = client.audio.speech.create(
        model=MODEL_ID, voice="alice", input=TEXT, response_format="wav", extra_body=EXTRA
    ).content
    assert got == synthesized[0]


def test_openai_streaming_response_returns_the_synthesize_stream(client, synthesized):
    """pcm: the bytes `synthesize --stream --out -` writes; wav: a header, then the same bytes."""
    with client.audio.speech.with_streaming_response.create(
        model=MODEL_ID, voice="alice", input=TEXT, response_format="pcm", stream_format="audio", extra_body=EXTRA
    ) as r:
        chunks = [c for c in r.iter_bytes() if c]
    assert b"".join(chunks) == synthesized[1]
    whole, _ = sf.read(io.BytesIO(synthesized[0]), dtype="int16")
    assert whole.tobytes() != synthesized[1]  # fp32 streamed audio differs in the last bits: the stream path ran
    with client.audio.speech.with_streaming_response.create(
        model=MODEL_ID, voice="alice", input=TEXT, response_format="wav", stream_format="audio", extra_body=EXTRA
    ) as r:
        body = r.read()
    assert body[:4] == b"RIFF" and body[36:40] == b"data" and body[44:] == synthesized[1]
    wav, sr = sf.read(io.BytesIO(body), dtype="int16")  # a reader takes the unknown-length header
    assert sr == 24000 and wav.tobytes() == synthesized[1]


def test_sse_events_carry_the_same_audio(cv, synthesized):
    body = {
        "model": MODEL_ID,
        "voice": "alice",
        "input": TEXT,
        "response_format": "pcm",
        "stream_format": "sse",
        **EXTRA,
    }
    r = httpx.post(cv[0].url + "/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: ") :]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert audio == synthesized[1]


def test_other_formats_decode_to_the_same_audio(cv, client, synthesized):
    ref, _ = sf.read(io.BytesIO(synthesized[0]), dtype="int16")
    pcm = client.audio.speech.create(model=MODEL_ID, voice="alice", input=TEXT, response_format="pcm", extra_body=EXTRA)
    assert pcm.content == ref.tobytes()
    flac = client.audio.speech.create(
        model=MODEL_ID, voice="alice", input=TEXT, response_format="flac", extra_body=EXTRA
    )
    assert np.array_equal(sf.read(io.BytesIO(flac.content), dtype="int16")[0], ref)  # lossless
    available = cv[1].state.info.formats
    for fmt in ("mp3", "opus"):  # lossy, where libsndfile encodes them: a decodable file of about the same length
        if fmt not in available:
            continue
        data = client.audio.speech.create(
            model=MODEL_ID, voice="alice", input=TEXT, response_format=fmt, extra_body=EXTRA
        ).content
        decoded, sr = sf.read(io.BytesIO(data))
        assert sr == 24000 and abs(len(decoded) - len(ref)) <= 2400, fmt


def test_models_health_and_request_ids(cv, client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    assert client.models.retrieve(MODEL_ID).id == MODEL_ID
    health = httpx.get(cv[0].url + "/health").json()
    assert health["status"] == "ok" and health["type"] == "custom_voice" and health["queue"]["max"] == 8
    assert "wav" in health["formats"] and "aac" not in health["formats"]
    assert "alice" in health["speakers"] and health["talker_steps_counted"] is True  # the exact path
    assert {"waiting", "waiting_cancelled", "max", "busy"} == set(health["queue"]) and "last_job" in health
    r = httpx.get(cv[0].url + "/health", headers={"x-request-id": "abc-1"})
    assert r.headers["x-request-id"] == "abc-1"


def test_voice_clone_by_id_equals_synthesize_with_the_reference(checkpoints, tmp_path):
    """Upload a reference and its transcript once; speech with its id is `synthesize
    --ref-audio --ref-text`'s audio. The same upload gives the same id; {"id": ...} works too."""
    rng = np.random.default_rng(0)
    ref = (0.3 * np.sin(np.arange(16000) / 5) + rng.normal(0, 0.05, 16000)).astype(np.float32)
    sf.write(tmp_path / "ref.wav", ref, 16000)
    ref_text = "A reference sentence."
    out = tmp_path / "clone.wav"
    model_dir = checkpoints["base"][1]
    code, _, err = synthesize(
        "--model", model_dir, "--ref-audio", tmp_path / "ref.wav", "--ref-text", ref_text, *CLI_ARGS, "--out", out
    )
    assert code == 0, err
    with served(model_dir) as (srv, _, _):
        files = {"audio_sample": ("ref.wav", (tmp_path / "ref.wav").read_bytes(), "audio/wav")}
        voice = httpx.post(srv.url + "/v1/voices", files=files, data={"text": ref_text, "name": "me"}, timeout=60)
        assert voice.status_code == 200, voice.text
        vid = voice.json()["id"]
        assert voice.json()["mode"] == "icl" and voice.json()["name"] == "me"
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0) as c:
            with open(tmp_path / "ref.wav", "rb") as f:  # OpenAI's own voices call, the transcript as an extra field
                again = c.audio.voices.create(audio_sample=f, consent="local", name="me", extra_body={"text": ref_text})
            assert again.id == vid  # the same recording and transcript: the same voice
            got = c.audio.speech.create(model=MODEL_ID, voice=vid, input=TEXT, response_format="wav", extra_body=EXTRA)
            assert got.content == out.read_bytes()
            by_object = c.audio.speech.create(
                model=MODEL_ID, voice={"id": vid}, input=TEXT, response_format="wav", extra_body=EXTRA
            )
            assert by_object.content == out.read_bytes()
        assert [v["id"] for v in httpx.get(srv.url + "/v1/voices").json()["data"]] == [vid]
        assert httpx.delete(srv.url + f"/v1/voices/{vid}").status_code == 200
        assert httpx.get(srv.url + "/v1/voices").json()["data"] == []


def test_voice_design_takes_instructions_and_equals_synthesize(checkpoints, tmp_path):
    model_dir = checkpoints["voice_design"][1]
    instruct = "A calm, low voice."
    out = tmp_path / "design.wav"
    code, _, err = synthesize("--model", model_dir, "--instruct", instruct, *CLI_ARGS, "--out", out)
    assert code == 0, err
    with served(model_dir) as (srv, _, _):
        with openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0) as c:
            got = c.audio.speech.create(
                model=MODEL_ID, voice="any", input=TEXT, instructions=instruct, response_format="wav", extra_body=EXTRA
            )
            assert got.content == out.read_bytes()
            with pytest.raises(openai.BadRequestError) as e:
                c.audio.speech.create(model=MODEL_ID, voice="any", input=TEXT)
            assert e.value.param == "instructions"


def test_sampling_fields_take_effect_under_upstreams_names(client, checkpoints, tmp_path):
    """Upstream's sampling keywords as extra fields reach the model: do_sample/subtalker_dosample
    false is `q3tts synthesize --greedy`, byte for byte; so is sampling with top_k and
    subtalker_top_k 1 (the argmax by another road); the default sampling, same seed, is not."""
    out = tmp_path / "greedy.wav"
    model = checkpoints["custom_voice"][1]
    code, _, err = synthesize("--model", model, "--speaker", "alice", *CLI_ARGS, "--greedy", "--out", out)
    assert code == 0, err
    greedy = out.read_bytes()

    def speech(**fields) -> bytes:
        body = {**EXTRA, **fields}
        return client.audio.speech.create(
            model=MODEL_ID, voice="alice", input=TEXT, response_format="wav", extra_body=body
        ).content

    assert speech(do_sample=False, subtalker_dosample=False) == greedy
    assert speech(top_k=1, subtalker_top_k=1) == greedy
    assert speech() != greedy
