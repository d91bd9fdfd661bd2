"""The city between the jobs and the machinery: its data (scene -> ray stores -> blocks), the
inits its modules start from, block training and the saved city model with its pictures."""
