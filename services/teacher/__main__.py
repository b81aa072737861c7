"""`python -m services.teacher --model smollm2|tiny|PATH --port PORT [--teacher-mode self|frozen|external]`"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.model_specs import ModelNotFound, check_spec
from shared.settings import TeacherSettings, from_flags, given_flags


def parse_args(argv: list[str] | None = None) -> TeacherSettings:
    parser = argparse.ArgumentParser(prog="python -m services.teacher", description="Serve the SDAR teacher over HTTP.")
    parser.add_argument("--model", help="policy: smollm2 (default), tiny, a directory, or a cached HF name")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8002)")
    parser.add_argument("--token", help="bearer token required on every route but /health")
    parser.add_argument("--cache-dir", type=Path, help="where the converted default model is kept")
    parser.add_argument("--teacher-mode", choices=["self", "frozen", "external"], help="teacher model (default self)")
    parser.add_argument("--teacher-model", help="external: the teacher (same tokenizer as the policy)")
    parser.add_argument(
        "--skills-mode", choices=["rule", "semantic", "combined"], help="skill retrieval (default rule)"
    )
    parser.add_argument("--skills-top-k", type=int, help="skills for semantic and combined retrieval (default 5)")
    parser.add_argument("--placement", choices=["prefix", "system"], help="skills as a text prefix or a system message")
    parser.add_argument("--max-prompt-tokens", type=int, help="privileged prompt limit, skills kept (default 4096)")
    parser.add_argument("--max-response-tokens", type=int, help="response limit (default 4096)")
    parser.add_argument("--max-batch-tokens", type=int, help="padded tokens per forward pass (default 16384)")
    parser.add_argument("--max-batch-items", type=int, help="items of several requests scored together (default 64)")
    parser.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more requests (default 5)")
    parser.add_argument(
        "--min-shared-prefix", type=int, help="leading tokens prompts must share to run them once (default 32; 0 off)"
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="weights (default float32)")
    args = parser.parse_args(argv)
    settings = from_flags(parser, TeacherSettings, given_flags(args))
    try:
        for spec in (settings.model, settings.teacher_model):
            if spec is not None:
                check_spec(spec)
    except ModelNotFound as e:
        parser.error(str(e))
    return settings


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    from services.teacher.app import create_app
    from services.teacher.service import PolicyError, TeacherService
    from shared.server import serve  # torch, transformers and the server, once the flags are checked

    try:
        service = TeacherService(settings)  # load before listening: a bad model never opens the port
    except (ModelNotFound, PolicyError, ValueError) as e:
        sys.exit(f"python -m services.teacher: error: {e}")
    serve(create_app(settings, service=service), settings.host, settings.port, "teacher")


if __name__ == "__main__":
    main()
