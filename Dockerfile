# The project's image: every service of docker-compose.yml runs from it. It builds with the project's
# own pinned set-up (scripts/setup), which bakes in what the offline defaults need: the SmolLM2 GGUF
# file, the spaCy model WebShop's reward uses and ALFWorld's 2.1.1 grammar. Nothing is downloaded at
# run time. On a GPU host, `pip install torch==2.13.0` in the set-up takes the CUDA build.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 sdar
WORKDIR /app
COPY --chown=sdar:sdar . /app
USER sdar
RUN ./scripts/setup
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1
# the SmolLM2 conversion, once, into the image's cache (later loads read it in well under a second)
RUN python -c "from shared.models import load_model; load_model('smollm2')"
EXPOSE 8001 8002
CMD ["python", "-m", "services.envs", "--host", "0.0.0.0"]
