"""Distribution on Ray: task fan-out, the meta-init server, train workers, continual phase."""
