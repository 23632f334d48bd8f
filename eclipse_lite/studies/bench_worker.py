"""The child process of :func:`eclipse_lite.studies.bench.measure`: one configuration, measured in
a fresh process so that its peak memory is its own (a process's peak RSS cannot be reset).

    python -m eclipse_lite.studies.bench_worker SPEC_JSON    # prints one BENCH_RESULT {json} line

Not a command for people: ``measure(..., isolate=True)`` writes the spec and reads the line.
"""
import sys

from eclipse_lite.studies.bench import measure_spec

if __name__ == "__main__":
    measure_spec(sys.argv[1])
