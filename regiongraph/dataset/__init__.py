"""The dataset side: archives, CSVs, split links, the index, shards, clip sampling, the toy set."""
