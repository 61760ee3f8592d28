//! The OpenAPI document and Swagger UI, served from the binary (nothing downloaded).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    ResponseBuilder,
};
use utoipa_swagger_ui::SwaggerUi;

/// An empty document with AI Flow's title and version, to merge route groups into.
#[must_use]
pub fn base_openapi() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("AI Flow API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("REST API of AI Flow under /api/v1"))
                .build(),
        )
        // With authentication on (`aiflow server --auth`), every route but the health ones
        // takes `Authorization: Bearer <token>` (docs/security.md).
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .description(Some(
                                "An API token (`aiflow token create`), needed when the server runs with --auth",
                            ))
                            .build(),
                    ),
                )
                .build(),
        ))
        .security(Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]))
        .build()
}

/// Serves `openapi` at `/api/v1/openapi.json` and Swagger UI at `/docs`. The paths in
/// `openapi` should already carry the `/api/v1` prefix (nest the route groups before
/// splitting the router).
pub fn docs_router(openapi: OpenApi) -> axum::Router {
    SwaggerUi::new("/docs")
        .url("/api/v1/openapi.json", openapi)
        .into()
}

/// Completes the document after the route groups are merged:
/// - the error answers that the shared extractors give on every route, where a route does not
///   describe them itself: 400 for a parameter or a body that does not parse, 413 for a body over
///   the limit, 422 for a body of the wrong shape, and 507 for a write to the metadata or event
///   store on a full disk. All carry the JSON error body;
/// - a description for every response that has none (OpenAPI requires one), from its status
///   and its body's schema.
pub fn document_error_responses(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (op, write) in ops {
            if let Some(op) = op.as_mut() {
                add_error_responses(op, write);
                describe_responses(op);
            }
        }
    }
}

/// Route groups whose writes go to the scheduler's state, which answers a full disk otherwise.
const SCHEDULER_TAGS: [&str; 3] = ["workflows", "executions", "workers"];

fn add_error_responses(op: &mut Operation, write: bool) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let stores = write
        && !op
            .tags
            .iter()
            .flatten()
            .any(|t| SCHEDULER_TAGS.contains(&t.as_str()));
    let mut add = |code: &str, description: &str| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    };
    if has_params || has_body {
        add("400", "a parameter or the body does not parse");
    }
    if has_body {
        add("413", "the body is over the size limit");
        add("422", "the body does not have the expected shape");
        add(
            "415",
            "the body is not sent as `Content-Type: application/json`",
        );
    }
    add(
        "403",
        "a request from another site's page (`Origin`), or to a `Host` that is not served",
    );
    if stores {
        add(
            "507",
            "the store's disk is full (`storage_full`); nothing was stored",
        );
    }
}

/// What a status means on any route, for responses the route left undescribed.
fn status_description(code: &str) -> &'static str {
    match code {
        "200" => "OK",
        "201" => "created",
        "202" => "accepted; the work goes on in the background",
        "204" => "done; no content",
        "400" => "a parameter or the body does not parse",
        "401" => "no valid API token (the server runs with --auth)",
        "403" => "the token's role does not allow this",
        "404" => "not found",
        "409" => "clashes with what is stored (a duplicate name or an illegal change)",
        "413" => "the body is over the size limit",
        "422" => "the body is not acceptable, or names something that does not exist",
        "503" => "a backend (database or event bus) is unavailable",
        "507" => "the store's disk is full (`storage_full`); nothing was stored",
        _ => "see the error body",
    }
}

fn describe_responses(op: &mut Operation) {
    for (code, response) in &mut op.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        if !response.description.trim().is_empty() {
            continue;
        }
        // The body's schema, when it is a named one: `OK: Project`.
        let schema = response
            .content
            .values()
            .find_map(|c| match c {
                RefOr::T(c) => match &c.schema {
                    Some(RefOr::Ref(r)) => r.ref_location.rsplit('/').next().map(str::to_string),
                    _ => None,
                },
                RefOr::Ref(_) => None,
            })
            .filter(|name| name != "ErrorBody");
        let base = status_description(code);
        response.description = match schema {
            Some(name) => format!("{base}: {name}"),
            None => base.to_string(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_documented_where_they_can_happen() {
        let mut doc: OpenApi = serde_json::from_value(serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/a/{name}": {"get": {"parameters": [{"name": "name", "in": "path",
                    "required": true, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "ok"}}}},
                "/b": {"post": {"requestBody": {"content": {"application/json": {}}},
                    "responses": {"201": {"description": "made"},
                                  "422": {"description": "own words"}}}},
                "/w": {"post": {"tags": ["workflows"],
                    "responses": {"201": {"description": "",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Project"}}}}}}},
                "/c": {"get": {"responses": {"200": {"description": "ok"}}}}
            }
        }))
        .unwrap();
        document_error_responses(&mut doc);
        let v = serde_json::to_value(&doc).unwrap();
        let codes = |p: &str, m: &str| -> Vec<String> {
            v["paths"][p][m]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        assert_eq!(codes("/a/{name}", "get"), ["200", "400", "403"]);
        assert_eq!(
            codes("/b", "post"),
            ["201", "400", "403", "413", "415", "422", "507"]
        );
        // The scheduler's writes do not answer 507; an empty description is filled.
        assert_eq!(codes("/w", "post"), ["201", "403"]);
        assert_eq!(
            v["paths"]["/w"]["post"]["responses"]["201"]["description"],
            "created: Project"
        );
        assert_eq!(
            v["paths"]["/b"]["post"]["responses"]["422"]["description"],
            "own words"
        );
        assert_eq!(
            v["paths"]["/b"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert_eq!(codes("/c", "get"), ["200", "403"]);
    }
}
