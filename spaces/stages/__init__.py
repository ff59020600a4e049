"""The four stages of the SPACES pipeline, one module each, run in order by `spaces.pipeline.run_pipeline`:

- `label` (`label_corpus`): load the documents, cut them into clauses, label the clauses a summary
  needs (greedy alignment), build the vocabularies (`Corpus`);
- `extract` (`run_extractor`): k-fold DGCNN extractor, out-of-fold extractions for the training
  documents and the folds' mean for the test documents (`Extraction`); its checkpoint is saved in the
  run directory;
- `generate` (`run_generator`): one copy-BIO UniLM generator per `Variant`, trained on the shared
  trainer and decoded by beam search (`Generation`);
- `score` (`system_scores`): ROUGE of every system against the reference summaries.

Run-directory layout: `spaces/README.md`, "Run directory".
"""
