//! The OpenAPI document and Swagger UI, served from the binary (nothing downloaded).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder};
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
