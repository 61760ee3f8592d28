//! Example pipelines written with the SDK. Each function returns the graph; the binaries of this
//! crate write it as the JSON document the server's `--dags` folder reads.

use aiflow_sdk::graph::{AiGraph, Event, GraphBuilder, Op, ValidationErrors};

/// The model the example pipeline trains.
pub const MODEL: &str = "fraud_detector";
/// The dataset the example pipeline produces.
pub const DATASET: &str = "online_features";

/// Online learning: ingest and featurise a batch of data, train when a new dataset version is
/// registered, evaluate each new model version, deploy it when the evaluation succeeds, and
/// restart the streaming predictor whenever a model is deployed. A cron trigger re-ingests
/// every six hours.
pub fn online_learning() -> Result<AiGraph, ValidationErrors> {
    let model_key = format!("model/{MODEL}");
    let mut g = GraphBuilder::new("online_learning");
    g.project("demo")
        .description("ingest → featurise → train → evaluate → deploy, with a streaming predictor");
    g.node("ingest")
        .op(Op::Ingest)
        .description("generate a batch of transactions")
        .command(["sh", "dags/jobs/ingest.sh"])
        .timeout_s(600)
        .retries(2);
    g.node("featurise")
        .op(Op::Transform)
        .description("compute features and register a dataset version")
        .command(["sh", "dags/jobs/featurise.sh"]);
    g.data_edge("ingest", "featurise");
    g.node("train")
        .op(Op::Train)
        .description("train a model and register a model version with its metrics")
        .command(["sh", "dags/jobs/train.sh"])
        .timeout_s(1800)
        .retries(1);
    g.node("evaluate")
        .op(Op::Evaluate)
        .description("compare the new version with the production alias")
        .command(["sh", "dags/jobs/evaluate.sh"])
        .timeout_s(600)
        .retries(1);
    g.node("deploy")
        .op(Op::Push)
        .description("move the production alias to the new version")
        .command(["sh", "dags/jobs/deploy.sh"])
        .timeout_s(300)
        .retries(1);
    g.node("predictor")
        .op(Op::Predict)
        .description("serve predictions with the production model")
        .command(["sh", "dags/jobs/predictor.sh"])
        .retries(3)
        .streaming();
    g.on(Event::key(format!("dataset/{DATASET}")).of_type("DATASET_VERSION_CREATED"))
        .start("train");
    g.on(Event::key(model_key.as_str()).of_type("MODEL_VERSION_CREATED"))
        .start("evaluate");
    g.after("evaluate").succeeded().start("deploy");
    g.on(Event::key(model_key.as_str()).of_type("MODEL_DEPLOYED"))
        .restart("predictor");
    g.cron("0 */6 * * *", "UTC");
    g.build()
}
