//! An example for every command's help, kept in one table: commands whose definitions carry
//! no `after_help` of their own get theirs from here (a test checks that none is left out).

/// Command path (without `aiflow`) → example lines.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "workflow",
        "aiflow workflow submit dags/online_learning.json\n  aiflow workflow list --output yaml",
    ),
    (
        "workflow list",
        "aiflow workflow list --project churn --limit 20\n  aiflow workflow list --cursor \"$NEXT\"   # the page after a list's next_cursor",
    ),
    (
        "workflow show",
        "aiflow workflow show online_learning --output json",
    ),
    ("workflow pause", "aiflow workflow pause online_learning"),
    ("workflow resume", "aiflow workflow resume online_learning"),
    ("workflow delete", "aiflow workflow delete online_learning"),
    (
        "execution",
        "aiflow execution start online_learning --wait 600\n  aiflow execution list --state RUNNING",
    ),
    (
        "execution list",
        "aiflow execution list --workflow online_learning --state FAILED --limit 10\n  aiflow execution list --cursor \"$NEXT\"",
    ),
    (
        "execution show",
        "aiflow execution show 3f0c9a1e --output yaml",
    ),
    ("execution stop", "aiflow execution stop 3f0c9a1e"),
    (
        "execution logs",
        "aiflow execution logs 3f0c9a1e train\n  aiflow execution logs 3f0c9a1e train --attempt 2\n  aiflow execution logs 3f0c9a1e train --follow",
    ),
    ("execution why", "aiflow execution why 3f0c9a1e deploy"),
    (
        "status",
        "aiflow status\n  aiflow status --interval 5 --output json",
    ),
    (
        "graph",
        "aiflow graph validate dags/online_learning.json\n  aiflow graph render dags/online_learning.json --format svg > graph.svg",
    ),
    (
        "event",
        "aiflow event send model_ready v1\n  aiflow event watch --key model_ready",
    ),
    (
        "project",
        "aiflow project create churn --description \"Churn prediction\"\n  aiflow project list",
    ),
    (
        "project create",
        "aiflow project create churn --description \"Churn prediction\" --tag team=ml",
    ),
    (
        "project list",
        "aiflow project list --prefix ch --limit 50\n  aiflow project list --cursor \"$NEXT\" --output yaml",
    ),
    ("project show", "aiflow project show churn"),
    (
        "project update",
        "aiflow project update churn --description \"Churn prediction, weekly\"",
    ),
    ("project delete", "aiflow project delete churn"),
    (
        "dataset",
        "aiflow dataset create clicks --uri s3://lake/clicks --format parquet\n  aiflow dataset version create clicks --uri s3://lake/clicks/2024-06-01 --rows 120000",
    ),
    (
        "dataset create",
        "aiflow dataset create clicks --project churn --uri s3://lake/clicks --format parquet --kind batch --field user_id:int64 --field ts:timestamp",
    ),
    (
        "dataset list",
        "aiflow dataset list --project churn --tags team=ml\n  aiflow dataset list --limit 20 --cursor \"$NEXT\"",
    ),
    ("dataset show", "aiflow dataset show clicks"),
    (
        "dataset update",
        "aiflow dataset update clicks --uri s3://lake/clicks-v2",
    ),
    ("dataset delete", "aiflow dataset delete clicks"),
    (
        "dataset version",
        "aiflow dataset version create clicks --uri s3://lake/clicks/2024-06-01\n  aiflow dataset version list clicks",
    ),
    (
        "dataset version create",
        "aiflow dataset version create clicks --uri s3://lake/clicks/2024-06-01 --rows 120000",
    ),
    (
        "dataset version list",
        "aiflow dataset version list clicks --limit 10",
    ),
    (
        "dataset version show",
        "aiflow dataset version show clicks 3",
    ),
    (
        "model",
        "aiflow model create churn-clf --project churn\n  aiflow model version promote churn-clf 4 --to DEPLOYED",
    ),
    (
        "model create",
        "aiflow model create churn-clf --project churn --description \"Gradient-boosted trees\"",
    ),
    (
        "model list",
        "aiflow model list --project churn\n  aiflow model list --limit 20 --cursor \"$NEXT\"",
    ),
    ("model show", "aiflow model show churn-clf --output yaml"),
    (
        "model update",
        "aiflow model update churn-clf --tag owner=ml-team",
    ),
    ("model delete", "aiflow model delete churn-clf"),
    (
        "model version",
        "aiflow model version create churn-clf --uri s3://models/churn/4\n  aiflow model version list churn-clf --stage DEPLOYED",
    ),
    (
        "model version create",
        "aiflow model version create churn-clf --uri s3://models/churn/4 --input clicks@3",
    ),
    (
        "model version list",
        "aiflow model version list churn-clf --stage DEPLOYED --limit 5",
    ),
    (
        "model version show",
        "aiflow model version show churn-clf 4",
    ),
    (
        "model version promote",
        "aiflow model version promote churn-clf 4 --to DEPLOYED --reason \"AUC 0.91 on last week\"",
    ),
    (
        "model version stages",
        "aiflow model version stages churn-clf 4",
    ),
    (
        "model alias",
        "aiflow model alias set churn-clf champion 4\n  aiflow model alias show churn-clf champion",
    ),
    (
        "model alias set",
        "aiflow model alias set churn-clf champion 4",
    ),
    (
        "model alias show",
        "aiflow model alias show churn-clf champion\n  aiflow model alias show churn-clf champion --at 2024-06-01T00:00:00Z",
    ),
    (
        "model alias delete",
        "aiflow model alias delete churn-clf champion",
    ),
    (
        "model alias history",
        "aiflow model alias history churn-clf champion",
    ),
    (
        "metric",
        "aiflow metric create auc --kind model --subject churn-clf\n  aiflow metric log auc auc 0.91 --step 10",
    ),
    (
        "metric create",
        "aiflow metric create auc --kind model --subject churn-clf --project churn",
    ),
    (
        "metric list",
        "aiflow metric list --project churn\n  aiflow metric list --limit 20 --cursor \"$NEXT\"",
    ),
    ("metric show", "aiflow metric show auc"),
    ("metric delete", "aiflow metric delete auc"),
    (
        "metric log",
        "aiflow metric log auc auc 0.91 --step 10\n  aiflow metric log auc --file points.jsonl",
    ),
    (
        "metric points",
        "aiflow metric points auc --key auc --max-points 200\n  aiflow metric points auc --key auc --limit 1000 --cursor \"$NEXT\"",
    ),
    (
        "artifact",
        "aiflow artifact create report --uri s3://reports/churn.html --kind report\n  aiflow artifact list",
    ),
    (
        "artifact create",
        "aiflow artifact create report --uri s3://reports/churn.html --kind report --size 20480",
    ),
    (
        "artifact list",
        "aiflow artifact list --project churn --prefix rep\n  aiflow artifact list --limit 20 --cursor \"$NEXT\"",
    ),
    ("artifact show", "aiflow artifact show report"),
    ("artifact delete", "aiflow artifact delete report"),
    (
        "artifact put",
        "aiflow artifact put report ./churn.html      # streamed; sha256 and size recorded",
    ),
    (
        "artifact get",
        "aiflow artifact get report -o churn.html
  aiflow artifact get report > churn.html",
    ),
    (
        "token",
        "aiflow token create --role operator --name ci\n  aiflow token list",
    ),
    (
        "token list",
        "aiflow token list --limit 20\n  aiflow token list --data-dir /var/lib/aiflow   # straight from the store",
    ),
    ("token revoke", "aiflow token revoke 3f9c0a1b2c3d"),
    (
        "supervise",
        "aiflow supervise .aiflow/runs/3f0c9a1e/train-1   # started by the server",
    ),
];

/// The example lines of a command path, if the table has them.
pub(crate) fn of(path: &str) -> Option<&'static str> {
    EXAMPLES.iter().find(|(p, _)| *p == path).map(|(_, e)| *e)
}

/// Gives every command without an `after_help` its example from the table.
pub(crate) fn add(cmd: clap::Command) -> clap::Command {
    add_at(cmd, "")
}

fn add_at(mut cmd: clap::Command, path: &str) -> clap::Command {
    if !path.is_empty()
        && cmd.get_after_help().is_none()
        && let Some(e) = of(path)
    {
        let head = if e.contains('\n') {
            "Examples"
        } else {
            "Example"
        };
        cmd = cmd.after_help(format!("{head}:\n  {e}"));
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| add_at(s, &sub_path));
    }
    cmd
}

/// Every command path of the table names a command.
#[cfg(test)]
pub(crate) fn paths() -> impl Iterator<Item = &'static str> {
    EXAMPLES.iter().map(|(p, _)| *p)
}
