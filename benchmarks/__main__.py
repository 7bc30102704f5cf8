"""Run every benchmark (or the ones named on the command line)."""

import importlib
import pkgutil
import sys
from pathlib import Path

args = sys.argv[1:]
leading = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))  # names come before the options
names = args[:leading] or sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                               if m.name.startswith("bench_"))
for name in names:
    module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
    print(f"== {module.__name__}")
    module.main()
