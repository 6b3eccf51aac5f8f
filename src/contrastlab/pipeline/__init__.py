"""The pipeline's steps, one module per DVC stage: download, examples, train, embed, tsne, probe."""
