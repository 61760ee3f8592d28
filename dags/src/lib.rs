//! Example pipelines written with the SDK. Each function returns the graph; the binaries of this
//! crate write it as the JSON document the server's `--dags` folder reads.

use std::time::Duration;

use aiflow_sdk::graph::{
    AiGraph, Condition, Event, GraphBuilder, Op, StatusCondition, ValidationErrors,
};

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

/// The sites of the federated-learning example, one work queue each.
pub const FL_SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
/// The work queue of the federated-learning example's controller side (init and aggregate).
pub const FL_AGGREGATOR_QUEUE: &str = "aggregator";

/// The learner node of a site: `learn_site_a` for `site-a`.
#[must_use]
pub fn fl_learner(site: &str) -> String {
    format!("learn_{}", site.replace('-', "_"))
}

/// Federated averaging: `init` publishes the first global model (`fl/model`, round 1); each
/// model event starts one learner per site, on that site's queue, which trains on the site's
/// own data and publishes its update (`fl/update/<site>`); once every site's update of the
/// round is in (and every learner and the previous aggregation have ended), `aggregate`
/// averages them and publishes the next round's model, or `fl/done` when the target loss or
/// the last round is reached, which finishes the execution.
pub fn federated_averaging() -> Result<AiGraph, ValidationErrors> {
    const SCRIPT: &str = "dags/jobs/federated.py";
    let model = || Event::key("fl/model").of_type("MODEL_VERSION_CREATED");
    let mut g = GraphBuilder::new("federated_averaging");
    g.project("demo").description(
        "federated averaging: per-site learners on their own queues, an aggregator, rounds driven by events",
    );
    g.node("init")
        .op(Op::Custom)
        .description("publish the round-1 global model (all weights zero)")
        .command(["python3", SCRIPT, "init"])
        .queue(FL_AGGREGATOR_QUEUE)
        .timeout_s(60)
        .retries(2);
    // The round's updates, one per site, and (so that no START of the next round finds a job
    // still running and is ignored) every learner ended.
    let mut all_in = Vec::new();
    let mut ended = Vec::new();
    for site in FL_SITES {
        let node = fl_learner(site);
        g.node(node.as_str())
            .op(Op::Train)
            .description(format!(
                "train on {site}'s data from the round's global model, publish the update"
            ))
            .command(["python3", SCRIPT, "learn"])
            .env("FL_SITE", site)
            .env("FL_LOCAL_STEPS", "25")
            .env("FL_LEARNING_RATE", "0.25")
            .queue(site)
            .timeout_s(300)
            .retries(1)
            .retry_backoff_s(1);
        g.on(model()).start(node.as_str());
        all_in.push(Condition::from(
            Event::key(format!("fl/update/{site}")).of_type("FL_UPDATE"),
        ));
        ended.push(Condition::job_status(node, StatusCondition::Succeeded));
    }
    g.node("aggregate")
        .op(Op::Evaluate)
        .description("average the round's updates; publish the next model or fl/done")
        .command(["python3", SCRIPT, "aggregate"])
        .env("FL_SITES", FL_SITES.join(","))
        .env("FL_ROUNDS", "10")
        .env("FL_TARGET_LOSS", "0.02")
        .queue(FL_AGGREGATOR_QUEUE)
        .timeout_s(120)
        .retries(1)
        .retry_backoff_s(1);
    // The previous aggregation (or init, before round 1) has ended too.
    all_in.extend(ended);
    all_in.push(Condition::any_of([
        Condition::job_status("init", StatusCondition::Succeeded),
        Condition::job_status("aggregate", StatusCondition::Succeeded),
    ]));
    g.on(Condition::all_of(all_in)).start("aggregate");
    g.finish_on(Event::key("fl/done").of_type("FL_DONE"));
    g.max_duration(Duration::from_secs(3600));
    g.build()
}
