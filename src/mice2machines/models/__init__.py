"""Models: the zoo, weights, layer hooks, activation extraction and stores, architecture
similarity. Import-light (the zoo table is read when the workflow is planned)."""
