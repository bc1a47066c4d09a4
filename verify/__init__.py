"""q3tts.verify: drives upstream qwen-tts and the standalone model on identical inputs."""
