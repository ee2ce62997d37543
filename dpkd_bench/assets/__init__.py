"""Files shipped with the package (the default recipe's trained teacher)."""
