"""Names and numbers shared by several modules. A leaf: it imports nothing of the plugin."""

from __future__ import annotations

MB = 1_000_000  # decimal megabytes, like file managers and the rubric's disk_mb

MARKER = "quant_rubric"  # the marker that makes a set of tests an eval group
PARAM = "quant_variant"  # the fixture (and parameter) that parametrizes tests over variants

# user_properties keys: how a test's facts travel on its report (and so through xdist)
CASE_PROP = "quantgate.case"
VARIANT_PROP = "quantgate.variant"
VERDICT_PROP = "quantgate.verdict"

MISS_PREFIX = "quant miss: "  # wasxfail reason of a failed assertion counted as a miss
DECIDED_PREFIX = "verdict decided: "  # skip reason of a case --quant-decide-early did not run

FIDELITY_N_CTX = 512  # corpus chunk size, like llama-perplexity's default
FIDELITY_TOP_K = 1024  # keeps the top-k + tail KLD within ~2% of the full one on SmolLM2 (benchmarks)

# The speed probe's fixed workload: this prompt (about 64 tokens on common tokenizers), then
# up to PROBE_MAX_TOKENS greedy tokens; a counting text keeps most models generating to the end.
PROBE_PROMPT = (
    "Here is a long list of numbers written out in order, separated by commas, with no gaps and "
    "no repeats, the way a careful clerk would copy them into a ledger: one, two, three, four, "
    "five, six, seven, eight, nine, ten, eleven, twelve, thirteen, fourteen,"
)
PROBE_MAX_TOKENS = 32
PROBE_REPEATS = 5
