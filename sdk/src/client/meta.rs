//! Typed methods of the meta routes: projects, datasets, models, metrics, artifacts, lineage.

use aiflow_api::meta::*;
use aiflow_api::{Page, PageQuery};
use chrono::{DateTime, Utc};

use super::{Client, Error, segment};

impl Client {
    // ---- projects

    pub async fn create_project(&self, p: &NewProject) -> Result<Project, Error> {
        self.post("/projects", p).await
    }
    pub async fn get_project(&self, name: &str) -> Result<Project, Error> {
        self.get(&format!("/projects/{}", segment(name)), &()).await
    }
    pub async fn list_projects(&self, q: &ListQuery) -> Result<Page<Project>, Error> {
        self.get("/projects", q).await
    }
    pub async fn update_project(&self, name: &str, u: &MetaUpdate) -> Result<Project, Error> {
        self.patch(&format!("/projects/{}", segment(name)), u).await
    }
    pub async fn delete_project(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/projects/{}", segment(name))).await
    }

    // ---- datasets

    pub async fn create_dataset(&self, d: &NewDataset) -> Result<Dataset, Error> {
        self.post("/datasets", d).await
    }
    pub async fn get_dataset(&self, name: &str) -> Result<Dataset, Error> {
        self.get(&format!("/datasets/{}", segment(name)), &()).await
    }
    pub async fn list_datasets(&self, q: &ListQuery) -> Result<Page<Dataset>, Error> {
        self.get("/datasets", q).await
    }
    pub async fn update_dataset(&self, name: &str, u: &DatasetUpdate) -> Result<Dataset, Error> {
        self.patch(&format!("/datasets/{}", segment(name)), u).await
    }
    pub async fn delete_dataset(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/datasets/{}", segment(name))).await
    }
    /// Adds the next version (announced as `DATASET_VERSION_CREATED`).
    pub async fn create_dataset_version(
        &self,
        name: &str,
        v: &NewDatasetVersion,
    ) -> Result<DatasetVersion, Error> {
        self.post(&format!("/datasets/{}/versions", segment(name)), v)
            .await
    }
    pub async fn list_dataset_versions(
        &self,
        name: &str,
        page: &PageQuery,
    ) -> Result<Page<DatasetVersion>, Error> {
        self.get(&format!("/datasets/{}/versions", segment(name)), page)
            .await
    }
    pub async fn get_dataset_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<DatasetVersion, Error> {
        self.get(
            &format!("/datasets/{}/versions/{version}", segment(name)),
            &(),
        )
        .await
    }

    // ---- models

    pub async fn create_model(&self, m: &NewModel) -> Result<Model, Error> {
        self.post("/models", m).await
    }
    pub async fn get_model(&self, name: &str) -> Result<Model, Error> {
        self.get(&format!("/models/{}", segment(name)), &()).await
    }
    pub async fn list_models(&self, q: &ListQuery) -> Result<Page<Model>, Error> {
        self.get("/models", q).await
    }
    pub async fn update_model(&self, name: &str, u: &MetaUpdate) -> Result<Model, Error> {
        self.patch(&format!("/models/{}", segment(name)), u).await
    }
    pub async fn delete_model(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/models/{}", segment(name))).await
    }
    /// Registers the next version (announced as `MODEL_VERSION_CREATED`).
    pub async fn create_model_version(
        &self,
        name: &str,
        v: &NewModelVersion,
    ) -> Result<ModelVersion, Error> {
        self.post(&format!("/models/{}/versions", segment(name)), v)
            .await
    }
    pub async fn list_model_versions(
        &self,
        name: &str,
        stage: Option<ModelStage>,
        page: &PageQuery,
    ) -> Result<Page<ModelVersion>, Error> {
        #[derive(serde::Serialize)]
        struct Q<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            stage: Option<ModelStage>,
            #[serde(flatten)]
            page: &'a PageQuery,
        }
        self.get(
            &format!("/models/{}/versions", segment(name)),
            &Q { stage, page },
        )
        .await
    }
    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<ModelVersion, Error> {
        self.get(
            &format!("/models/{}/versions/{version}", segment(name)),
            &(),
        )
        .await
    }
    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        u: &ModelVersionUpdate,
    ) -> Result<ModelVersion, Error> {
        self.patch(&format!("/models/{}/versions/{version}", segment(name)), u)
            .await
    }
    /// Moves a version to `stage` (announced as `MODEL_VALIDATED`, `MODEL_DEPLOYED`, …).
    pub async fn promote_model_version(
        &self,
        name: &str,
        version: i64,
        stage: ModelStage,
        reason: Option<String>,
    ) -> Result<ModelVersion, Error> {
        let u = ModelVersionUpdate {
            stage: Some(stage),
            reason,
            ..ModelVersionUpdate::default()
        };
        self.update_model_version(name, version, &u).await
    }
    pub async fn stage_history(&self, name: &str, version: i64) -> Result<Vec<StageChange>, Error> {
        self.get(
            &format!("/models/{}/versions/{version}/stages", segment(name)),
            &(),
        )
        .await
    }
    /// Where `alias` points now, or at `at`.
    pub async fn get_alias(
        &self,
        name: &str,
        alias: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<ModelAlias, Error> {
        self.get(
            &format!("/models/{}/aliases/{}", segment(name), segment(alias)),
            &AliasQuery { at },
        )
        .await
    }
    /// Moves `alias` to `version` (announced as `MODEL_ALIAS_MOVED`).
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        version: i64,
    ) -> Result<ModelAlias, Error> {
        self.put(
            &format!("/models/{}/aliases/{}", segment(name), segment(alias)),
            &SetAlias { version },
        )
        .await
    }
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<(), Error> {
        self.delete(&format!(
            "/models/{}/aliases/{}",
            segment(name),
            segment(alias)
        ))
        .await
    }
    pub async fn alias_history(&self, name: &str, alias: &str) -> Result<Vec<AliasMove>, Error> {
        self.get(
            &format!(
                "/models/{}/aliases/{}/history",
                segment(name),
                segment(alias)
            ),
            &(),
        )
        .await
    }

    // ---- metrics

    pub async fn create_metric(&self, m: &NewMetric) -> Result<Metric, Error> {
        self.post("/metrics", m).await
    }
    pub async fn get_metric(&self, name: &str) -> Result<Metric, Error> {
        self.get(&format!("/metrics/{}", segment(name)), &()).await
    }
    pub async fn list_metrics(&self, q: &ListQuery) -> Result<Page<Metric>, Error> {
        self.get("/metrics", q).await
    }
    pub async fn update_metric(&self, name: &str, u: &MetaUpdate) -> Result<Metric, Error> {
        self.patch(&format!("/metrics/{}", segment(name)), u).await
    }
    pub async fn delete_metric(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/metrics/{}", segment(name))).await
    }
    /// Appends points, all or none.
    pub async fn log_points(
        &self,
        name: &str,
        points: &[MetricPoint],
    ) -> Result<PointsWritten, Error> {
        self.post(&format!("/metrics/{}/points", segment(name)), points)
            .await
    }
    /// One key's history (paged), or downsampled with `max_points`.
    pub async fn read_points(&self, name: &str, q: &PointsQuery) -> Result<PointSeries, Error> {
        self.get(&format!("/metrics/{}/points", segment(name)), q)
            .await
    }

    // ---- artifacts

    pub async fn create_artifact(&self, a: &NewArtifact) -> Result<Artifact, Error> {
        self.post("/artifacts", a).await
    }
    pub async fn get_artifact(&self, name: &str) -> Result<Artifact, Error> {
        self.get(&format!("/artifacts/{}", segment(name)), &())
            .await
    }
    pub async fn list_artifacts(&self, q: &ListQuery) -> Result<Page<Artifact>, Error> {
        self.get("/artifacts", q).await
    }
    pub async fn update_artifact(&self, name: &str, u: &ArtifactUpdate) -> Result<Artifact, Error> {
        self.patch(&format!("/artifacts/{}", segment(name)), u)
            .await
    }
    /// Uploads the file of artifact `name` from `body`, streamed (no request timeout: a file
    /// takes as long as it takes). With `sha256` (64 hex digits)
    /// the server refuses bytes that differ (422) and keeps nothing. Returns the artifact with
    /// the file's sha256 and size.
    pub async fn upload_artifact_content(
        &self,
        name: &str,
        body: reqwest::Body,
        sha256: Option<&str>,
    ) -> Result<Artifact, Error> {
        let mut rb = self
            .stream_request(
                reqwest::Method::PUT,
                &format!("/artifacts/{}/content", segment(name)),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(sum) = sha256 {
            rb = rb.header(super::CHECKSUM_HEADER, sum);
        }
        self.send(rb).await
    }

    /// Uploads the file at `path` as the content of artifact `name`: its sha256 is computed
    /// here first and checked by the server, then the file is streamed.
    pub async fn upload_artifact_file(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<Artifact, Error> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let sha = file_sha256(path).await.map_err(io)?;
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let stream = read_stream(file);
        let body = reqwest::Body::wrap_stream(stream);
        let rb = self
            .stream_request(
                reqwest::Method::PUT,
                &format!("/artifacts/{}/content", segment(name)),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .header(super::CHECKSUM_HEADER, &sha)
            .body(body);
        self.send(rb).await
    }

    /// The file of artifact `name` as a streamed answer (read it with `bytes_stream`); its
    /// recorded sha256 is in the `x-checksum-sha256` header.
    pub async fn download_artifact_content(&self, name: &str) -> Result<reqwest::Response, Error> {
        self.send_raw(self.stream_request(
            reqwest::Method::GET,
            &format!("/artifacts/{}/content", segment(name)),
        ))
        .await
    }

    /// Downloads the file of artifact `name` into `path`, streamed: written to a temporary file
    /// beside it, checked against the sha256 the server recorded, then moved into place (a
    /// failed download leaves `path` as it was). Returns the number of bytes.
    pub async fn download_artifact_file(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<u64, Error> {
        use futures::StreamExt;
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let resp = self.download_artifact_content(name).await?;
        let url = resp.url().to_string();
        let want = resp
            .headers()
            .get(super::CHECKSUM_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let file_name = path
            .file_name()
            .map_or_else(|| "artifact".into(), |n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(".{file_name}.part"));
        let result: Result<(u64, String), Error> = async {
            let mut f = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut sha = sha2::Sha256::new();
            let mut n = 0u64;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| Error::Connect {
                    url: url.clone(),
                    source,
                })?;
                sha.update(&chunk);
                n += chunk.len() as u64;
                f.write_all(&chunk).await.map_err(io)?;
            }
            f.flush().await.map_err(io)?;
            f.sync_all().await.map_err(io)?;
            Ok((n, hex(&sha.finalize())))
        }
        .await;
        let checked = result.and_then(|(n, got)| match &want {
            Some(w) if *w != got => Err(Error::Decode {
                url: url.clone(),
                message: format!("the downloaded bytes have sha256 {got}, the server recorded {w}"),
            }),
            _ => Ok(n),
        });
        match checked {
            Ok(n) => {
                tokio::fs::rename(&tmp, path).await.map_err(io)?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    pub async fn delete_artifact(&self, name: &str) -> Result<(), Error> {
        self.delete(&format!("/artifacts/{}", segment(name))).await
    }

    // ---- lineage

    /// The graph within `depth` hops of `node` (`dataset:NAME@V`, `model:NAME@V`,
    /// `job_execution:ID`).
    pub async fn lineage(&self, node: &str, depth: u32) -> Result<LineageGraph, Error> {
        self.get(
            "/lineage",
            &LineageQuery {
                node: Some(node.to_string()),
                depth: Some(depth),
            },
        )
        .await
    }
    /// Records what a job execution read and wrote.
    pub async fn add_lineage(&self, l: &NewLineage) -> Result<(), Error> {
        self.post::<()>("/lineage/edges", l).await
    }
    /// Reports an OpenLineage RunEvent.
    pub async fn openlineage(&self, ev: &OpenLineageRunEvent) -> Result<OpenLineageResult, Error> {
        self.post("/lineage", ev).await
    }
}

/// The sha256 of a file, read in blocks (64 lower-case hex digits).
async fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut sha = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(hex(&sha.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A file as a stream of blocks (one in memory at a time).
fn read_stream(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(file, |mut f| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}
