"""Atomic file writes: a reader sees the old file or the new one, never half."""
from __future__ import annotations

import json
import os
import tempfile


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes data to a temporary file beside path, then renames it over path."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp_')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_json(path: str, obj, **dumps_kwargs) -> None:
  atomic_write_bytes(path, (json.dumps(obj, **dumps_kwargs) + '\n').encode())


def cpu_info() -> dict:
  """The CPU's model name and its wide vector extensions (from /proc/cpuinfo;
  empty where there is none): ratios against torch move with them."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      text = f.read()
  except OSError:
    return {}
  fields = dict(line.split(':', 1) for line in text.splitlines()
                if ':' in line)
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = set(fields.get('flags', '').split())
  wide = sorted(f for f in flags if f in ('avx', 'avx2', 'fma') or
                f.startswith('avx512'))
  return dict(cpu_model=fields.get('model name', ''), cpu_vector_extensions=wide,
              cpu_count=os.cpu_count())


def print_json_line(obj, path: str | None = None) -> None:
  """Prints obj as one JSON line and, given a path, writes the same line there
  atomically (the benchmarks' last line of output). The machine's load average
  at the end of the run is added (`load_avg`: 1, 5, 15 minutes) unless the
  benchmark recorded its own: load slows torch more than XLA, so ratios
  measured under load flatter us. So are the CPU's model and vector
  extensions (cpu_info), unless recorded."""
  if isinstance(obj, dict) and 'load_avg' not in obj:
    obj = dict(obj, load_avg=[round(x, 2) for x in os.getloadavg()])
  if isinstance(obj, dict) and 'cpu_model' not in obj:
    obj = dict(obj, **cpu_info())
  line = json.dumps(obj)
  if path:
    atomic_write_bytes(path, (line + '\n').encode())
  print(line)
