# Transfer Learning Studio as a container: `docker build -t tl-studio .`, then
# `docker run -p 8501:8501 -v tl-data:/data tl-studio` and open http://localhost:8501.
#
# BASE is any Debian-like image with Python 3.11+ and its venv module: the official
# python:3.11-slim (the default), or plain Debian bookworm with python3 and python3-venv.
# For an NVIDIA GPU see the README ("Run it in a container"); that variant is unverified.
ARG BASE=python:3.11-slim
FROM ${BASE}

# Everything the studio keeps (datasets, feature cache, runs) and Keras' weights cache
# ($KERAS_HOME/models) live on the /data volume, so they survive a new container.
ENV TL_STUDIO_HOME=/data \
    KERAS_HOME=/data/keras \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# The user the app runs as (not root); it owns the data volume.
RUN groupadd --system --gid 10001 studio \
    && useradd --system --uid 10001 --gid studio --create-home --home-dir /home/studio \
       --shell /usr/sbin/nologin studio \
    && mkdir -p /data/keras/models \
    && chown -R studio:studio /data

WORKDIR /app

# Requirements first: a change to the code reuses this layer (TensorFlow is not reinstalled).
COPY requirements.txt ./
RUN python3 -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir -r requirements.txt

# The project itself (.dockerignore keeps out virtual environments, git, test artifacts).
COPY . .

USER studio
VOLUME ["/data"]
EXPOSE 8501

# The slim image has no curl: ask Streamlit's health endpoint with Python.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('STREAMLIT_SERVER_PORT', '8501'); reply = urllib.request.urlopen(f'http://127.0.0.1:{port}/_stcore/health', timeout=8); raise SystemExit(reply.read().strip() != b'ok')"]

CMD ["streamlit", "run", "streamlit_app.py", "--server.address", "0.0.0.0"]
