"""Jobs: the code behind ``pipelines/*.py`` and ``mclnf <subcommand>``."""
