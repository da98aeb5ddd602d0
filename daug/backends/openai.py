"""`openai`: any OpenAI-compatible chat endpoint (vLLM, Ollama, llama.cpp server, hosted APIs).

- `base_url` and `model` come from params; the API key ONLY from the environment variable named by
  `api_key_env` (none is sent when it is unset, as local servers need none). The key is never
  written anywhere: not to the cache, outputs, errors or logs.
- Each request has a `timeout`; HTTP 429/5xx, timeouts and connection errors are retried up to
  `max_retries` times with exponential backoff (`backoff` * 2^attempt seconds), then a DaugError.
- Finished replies are checkpointed in a JSONL cache (`cache_dir`, one line per request, keyed by
  the hash of the request body, which holds no key), appended as each reply arrives: a re-run
  after an interruption resends only the missing requests.
- `concurrency` requests run at once; the output order is the input order either way.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from daug import DaugError
from daug.backends import register
from daug.backends.base import Backend, budgets, one_line, positive
from daug.io import dumps, stable_hash

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


@register
class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, params: dict | None = None):
        super().__init__(params)
        self.url = self.params["base_url"].rstrip("/") + "/chat/completions"
        self._lock = threading.Lock()
        self._cache: dict[str, str] | None = None

    def check(self, params):
        positive(self.name, params, "timeout", "concurrency", "max_new_tokens")
        if params["max_retries"] < 0 or params["backoff"] < 0:
            raise DaugError("backend 'openai': max_retries and backoff must be >= 0")
        if not params["base_url"].startswith(("http://", "https://")):
            raise DaugError(f"backend 'openai': base_url must start with http:// or https://, got {params['base_url']!r}")

    # --- checkpoint -------------------------------------------------------------------------------
    @property
    def cache_file(self) -> Path:
        return Path(self.params["cache_dir"]) / f"{self.params['model'].replace('/', '_')}.jsonl"

    def _load_cache(self) -> dict[str, str]:
        if self._cache is None:
            self._cache = {}
            if self.cache_file.exists():
                for line in self.cache_file.read_text(encoding="utf-8").splitlines():
                    try:
                        entry = json.loads(line)
                        self._cache[entry["key"]] = entry["content"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by a kill mid-write: that request is simply sent again
        return self._cache

    def _remember(self, key: str, content: str) -> None:
        with self._lock:
            self._cache[key] = content
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_file.open("a", encoding="utf-8") as f:
                f.write(dumps({"key": key, "content": content}) + "\n")
                f.flush()

    # --- requests ---------------------------------------------------------------------------------
    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.params["api_key_env"])
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: dict) -> str:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        retries, problem = self.params["max_retries"], ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.params["backoff"] * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.params["timeout"]) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return payload["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                problem = f"HTTP {e.code} {e.reason}"
                if e.code in (401, 403):
                    raise DaugError(f"backend 'openai': {self.url}: {problem}: check the API key in the "
                                    f"environment variable {self.params['api_key_env']}") from None
                if e.code not in RETRY_STATUS:
                    raise DaugError(f"backend 'openai': {self.url}: {problem}") from None
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                problem = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                problem = "malformed response (no choices[0].message.content)"
        raise DaugError(f"backend 'openai': {self.url}: gave up after {retries + 1} attempts ({problem})")

    def chat(self, conversations: list[list[dict]], seeds: list[int], temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens=None) -> list[str]:
        """Raw replies to message lists, checkpointed: a cached request is never sent again."""
        cache = self._load_cache()
        limits = budgets(max_new_tokens, len(conversations), self.max_new_tokens)
        bodies = [{"model": self.params["model"], "messages": msgs, "temperature": temperature, "top_p": top_p,
                   "max_tokens": limit, "seed": seed % 2**31}
                  for msgs, seed, limit in zip(conversations, seeds, limits)]
        keys = [f"{stable_hash(body):016x}" for body in bodies]  # the body holds no key
        todo = sorted({k: b for k, b in zip(keys, bodies) if k not in cache}.items())

        def send(item):
            key, body = item
            self._remember(key, self._post(body))

        if todo:
            from tqdm import tqdm  # text on stderr: a widget would stay at "0%" in the executed notebook

            pool = ThreadPoolExecutor(self.params["concurrency"])
            try:
                futures = [pool.submit(send, item) for item in todo]
                for future in tqdm(as_completed(futures), total=len(todo), desc="openai", unit="req"):
                    future.result()
            finally:  # after a failure, queued requests are dropped: the error surfaces at once
                pool.shutdown(wait=True, cancel_futures=True)
        return [cache[k] for k in keys]

    def complete(self, tasks, seeds, temperature=0.0, top_p=1.0, max_new_tokens=None):
        return [one_line(r) for r in self.chat([t.messages() for t in tasks], seeds, temperature, top_p,
                                                max_new_tokens)]
