"""skillweave.providers: model providers (spec strings, the models file, fleets, replay, the reply cache, batch
APIs, prices), the embedded models and their batching engine, and the image backends. Roles in `agents/` call
models through `agents/llm.py`; trainers load the embedded model from here without reaching into `agents/`."""
