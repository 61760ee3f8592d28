//! `aiflow status`: server health, the backends in use, and what is running.

use aiflow_api::meta::{ExecutionQuery, ListQuery};

use super::{CliError, CliResult, Ctx, runtime};

pub(crate) fn run(ctx: &Ctx) -> CliResult {
    let client = ctx.client();
    runtime().block_on(async {
        let url = format!("{}/readyz", client.base_url());
        let ready: serde_json::Value = reqwest::get(&url)
            .await
            .map_err(|e| CliError::Failed(format!("cannot reach {url}: {e}"), Vec::new()))?
            .json()
            .await
            .map_err(|e| CliError::Failed(format!("unexpected answer from {url}: {e}"), Vec::new()))?;
        let running = client
            .list_executions(&ExecutionQuery {
                state: Some("RUNNING".into()),
                limit: Some(1000),
                ..ExecutionQuery::default()
            })
            .await?;
        let workflows = client
            .list_workflows(&ListQuery {
                limit: Some(1000),
                ..ListQuery::default()
            })
            .await?;
        let out = serde_json::json!({
            "server": client.base_url(),
            "status": ready["status"],
            "database": ready["database"],
            "events": ready["events"],
            "workflows": workflows.items.len(),
            "running_executions": running.items.len(),
        });
        ctx.print(&out, |o| {
            format!(
                "server      {}\nstatus      {}\ndatabase    {} ({})\nevents      {} ({})\nworkflows   {}\nrunning     {} executions\n",
                o["server"].as_str().unwrap_or("?"),
                o["status"].as_str().unwrap_or("?"),
                o["database"]["backend"].as_str().unwrap_or("?"),
                o["database"]["status"].as_str().unwrap_or("?"),
                o["events"]["backend"].as_str().unwrap_or("?"),
                o["events"]["status"].as_str().unwrap_or("?"),
                o["workflows"],
                o["running_executions"],
            )
        });
        if ready["status"] != "ready" {
            return Err(CliError::Failed(
                "the server is not ready (see above)".into(),
                Vec::new(),
            ));
        }
        Ok(())
    })
}
