"""Optional engines that run the shards of an embed elsewhere; each imports its engine lazily."""
