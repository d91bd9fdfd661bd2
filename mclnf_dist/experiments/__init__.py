"""What an experiment is: the signals and city experiments' configs, their named recipes, and
the signals' data split; jobs run them, sweeps search them, benches size them."""
