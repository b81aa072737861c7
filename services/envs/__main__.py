"""`python -m services.envs --envs alfworld,webshop --host 127.0.0.1 --port PORT [--redis-url URL]`"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.envs.registry import FACTORIES
from shared.settings import EnvServiceSettings, from_flags, given_flags


def parse_args(argv: list[str] | None = None) -> EnvServiceSettings:
    parser = argparse.ArgumentParser(prog="python -m services.envs", description="Serve environments over HTTP.")
    parser.add_argument("--envs", help=f"comma-separated envs to host ({', '.join(sorted(FACTORIES))})")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8001)")
    parser.add_argument("--redis-url", help="episode store shared by replicas (default: in-process)")
    parser.add_argument("--redis-prefix", help="key prefix in Redis")
    parser.add_argument("--redis-wait-s", type=float, help="wait this long for Redis at start (default 30)")
    parser.add_argument("--token", help="bearer token required on every route but /health")
    parser.add_argument("--episode-ttl-s", type=float, help="idle episodes expire after this (default 3600)")
    parser.add_argument("--max-open-episodes", type=int, help="open episodes per store (default 10000)")
    parser.add_argument("--live-cache-size", type=int, help="live simulators kept per env (default 64)")
    parser.add_argument("--sim-threads", type=int, help="worker threads for simulator work (default 8)")
    parser.add_argument("--alfworld-backend", choices=["native", "textworld"], help="ALFWorld engine (default native)")
    parser.add_argument("--alfworld-dialect", choices=["2.1.2", "2.1.1"], help="ALFWorld text dialect")
    parser.add_argument(
        "--alfworld-data", type=Path, help="official ALFWorld data (else $ALFWORLD_DATA, else generated)"
    )
    parser.add_argument("--cache-dir", type=Path, help="where generated games and WebShop title nouns are kept")
    parser.add_argument(
        "--webshop-backend", choices=["embedded", "original"], help="generated catalog, or the real data files"
    )
    parser.add_argument("--webshop-products", type=Path, help="original: items_shuffle*.json")
    parser.add_argument("--webshop-attributes", type=Path, help="original: items_ins_v2*.json")
    parser.add_argument("--webshop-human-goals", type=Path, help="original: items_human_ins.json")
    parser.add_argument("--webshop-goals", choices=["synthetic", "human"], help="goal set (default synthetic)")
    parser.add_argument("--webshop-catalog-size", type=int, help="embedded: products to generate (default 1000)")
    parser.add_argument("--webshop-seed", type=int, help="embedded: catalog seed (default 0)")
    parser.add_argument("--searchqa-seed", type=int, help="embedded: world seed (default 0)")
    parser.add_argument("--searchqa-data", type=Path, help="a Search-R1-format dataset (parquet/JSONL file or folder)")
    parser.add_argument("--searchqa-corpus", type=Path, help="a wiki-18-format JSONL corpus to search in-process")
    parser.add_argument("--searchqa-retriever", choices=["bm25", "dense"], help="in-process retrieval (default bm25)")
    parser.add_argument("--searchqa-retriever-url", help="a Search-R1-compatible retriever URL (replaces in-process)")
    parser.add_argument("--searchqa-retriever-form", choices=["batch", "single"], help="its request form")
    parser.add_argument("--searchqa-retriever-timeout-s", type=float, help="per request (default 10)")
    parser.add_argument("--searchqa-retriever-retries", type=int, help="retries (default 10)")
    parser.add_argument("--searchqa-topk", type=int, help="passages per search (default 3)")
    parser.add_argument(
        "--searchqa-passages", choices=["verl-agent", "search-r1"], help="passage format (default verl-agent)"
    )
    args = parser.parse_args(argv)
    given = given_flags(args)
    if "envs" in given:
        given["envs"] = [e.strip() for e in given["envs"].split(",") if e.strip()]
        unknown = sorted(set(given["envs"]) - set(FACTORIES))
        if unknown or not given["envs"]:
            parser.error(f"unknown env(s) {unknown or given['envs']}; known: {', '.join(sorted(FACTORIES))}")
    return from_flags(parser, EnvServiceSettings, given)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    from services.envs.app import StoreUnreachable, create_app, wait_for_store
    from shared.server import serve  # the server and the envs, once the flags are checked

    if settings.redis_url:  # never come up against a store that is not there: one line, non-zero
        from services.envs.store import RedisEpisodeStore

        async def reachable() -> None:
            store = RedisEpisodeStore(settings.redis_url or "", 1.0, 1, settings.redis_prefix)
            try:
                await wait_for_store(store, settings.redis_wait_s)
            finally:
                await store.close()

        try:
            asyncio.run(reachable())
        except ValueError as e:  # not a redis:// URL
            sys.exit(f"python -m services.envs: error: --redis-url: {e}")
        except StoreUnreachable as e:
            sys.exit(f"python -m services.envs: error: {e} (--redis-url, SDAR_REDIS_WAIT_S)")
    serve(create_app(settings), settings.host, settings.port, "env service")


if __name__ == "__main__":
    main()
