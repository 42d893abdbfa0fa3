"""The study: a model file scored on its task (`tinymath eval`), studies of sizes x variants x seeds
(`tinymath sweep`, with curricula), and their report (`tinymath report`). Needs no torch, except
the sweep's training and export steps."""
