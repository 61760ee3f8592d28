//! The OpenAPI document and Swagger UI, served from the binary (nothing downloaded).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, ResponseBuilder,
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

/// Adds the error answers that the shared extractors give on every route, where a route does
/// not describe them itself: 400 for a parameter or a body that does not parse, 413 for a body
/// over the limit, 422 for a body of the wrong shape. All carry the JSON error body.
pub fn document_error_responses(openapi: &mut OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            add_error_responses(op);
        }
    }
}

fn add_error_responses(op: &mut Operation) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
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
            ["201", "400", "403", "413", "415", "422"]
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
