//! AI Flow meta service: projects, datasets, workflows and their runs, models, metrics,
//! artifacts and lineage.
