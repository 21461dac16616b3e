"""Model loads show progress on their own line: name, file, size, load time (and the speed
probe's result when a speed gate runs it); nothing with -q."""

from __future__ import annotations

from .fake_project import FakeProject, echo_cases


def test_each_load_is_announced_unless_quiet(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script()
    fake.pytester.makepyfile(test_qa=echo_cases())
    result = fake.run()
    result.stdout.re_match_lines([r"quantgate: loading Q8_0 \(tiny-q8_0\.gguf, 0\.4 MB\) \.\.\. \d+\.\d\d s$",
                                  r"quantgate: loading Q2_K \(tiny-q2_k\.gguf, 0\.1 MB\) \.\.\. \d+\.\d\d s$"])
    quiet = fake.run("-q")
    assert "quantgate: loading" not in quiet.stdout.str()


def test_the_probe_and_a_failed_load_say_so(fake: FakeProject) -> None:
    fake.config(["Q8_0", "Q2_K"])
    fake.script(fail_load=["Q2_K"], speed={"Q8_0": 50.0})
    fake.pytester.makepyfile(test_qa=echo_cases("accuracy=0.5, tokens_per_second=1"))
    result = fake.run()
    result.stdout.re_match_lines([r"quantgate: loading Q8_0 .* \d+\.\d\d s; speed probe \.\.\. 50\.0 tok/s$",
                                  r"quantgate: loading Q2_K .* \.\.\. not loaded$"])
