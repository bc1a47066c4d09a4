"""`q3tts serve`: an OpenAI-compatible speech server around one standalone model.

The package imports the standalone runtime and the web stack (FastAPI on uvicorn), never the
reference stack. Modules: ``settings`` (limits and what the server offers), ``errors`` (the JSON
error body), ``schema`` (a speech request, validated field by field), ``formats`` (audio
encoders), ``voices`` (registered clone prompts), ``worker`` (the one thread that runs the model,
its bounded queue and cancellation), ``synth`` (what a job does with the model), ``app`` (the
routes), ``accesslog`` (one JSON line per request), ``cli`` (the command) and ``loadtest``.
"""
