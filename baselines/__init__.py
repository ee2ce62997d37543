"""Published results of distillation papers, one YAML file per paper (read by
``dpkd_bench.report.published``); installed as the package ``dpkd_bench.baselines``."""
