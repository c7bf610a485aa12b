//! API documents. Each service's OpenAPI document is generated from its
//! handlers and request/response types (`utoipa`); [`complete`] adds what
//! every service shares — the error body, the three credentials, the
//! health and metrics endpoints — and [`routes`] serves it with Swagger UI
//! at `/docs`. The Swagger UI files are compiled into the binary (see
//! assets/swagger-ui/README.md), so the page needs no network. The same
//! documents are checked into docs/api/, and a test fails when they drift.

use actix_web::{web, HttpResponse};
use shared_events::Service;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, OpenApi};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::http::ErrorBody;

/// `Authorization: Bearer <member token>`: who the fan is.
pub const MEMBER_TOKEN: &str = "member_token";
/// `Queue-Pass: <pass>`: the fan was admitted from the waiting line.
pub const QUEUE_PASS: &str = "queue_pass";
/// `X-Admin-Key: <key>`: the deployment's administrator.
pub const ADMIN_KEY: &str = "admin_key";

const SWAGGER_UI_CSS: &str = include_str!("../assets/swagger-ui/swagger-ui.css");
const SWAGGER_UI_JS: &str = include_str!("../assets/swagger-ui/swagger-ui-bundle.js");

/// The endpoints every service serves (runtime/src/http.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(crate::http::live, crate::http::ready, crate::http::metrics))]
struct Shared;

/// A service's document with the shared parts added.
pub fn complete(service: Service, mut document: OpenApi) -> OpenApi {
    document.info.title = format!("{service} service");
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document.merge(Shared::openapi());
    let mut components = document
        .components
        .take()
        .unwrap_or_else(|| ComponentsBuilder::new().build());
    components
        .schemas
        .insert(ErrorBody::name().into_owned(), ErrorBody::schema());
    components.add_security_scheme(
        MEMBER_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "The fan's member token from the identity provider (`ticketctl login USER-ID` \
                     on a development cluster). The fan is its subject; a missing, malformed, \
                     forged, expired or foreign token is 401 with a code saying which.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        QUEUE_PASS,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Queue-Pass",
            "The fan's own pass from the waiting line (the queue service signs it when the \
             fan is admitted). Another fan's pass is 403.",
        ))),
    );
    components.add_security_scheme(
        ADMIN_KEY,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Admin-Key",
            "The deployment's admin key, one for every service (`APP__ADMIN__KEY`; \
             `data/admin-key` of `ticketctl up`, `/secrets/admin-key` on compose).",
        ))),
    );
    document.components = Some(components);
    document
}

/// The document as served and as checked in: pretty JSON, one ending newline.
pub fn to_json(document: &OpenApi) -> String {
    let mut json = document.to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The served document, made once; answers share its bytes.
#[derive(Clone)]
pub struct Document(pub web::Bytes);

/// `/docs` (Swagger UI), `/docs/openapi.json` and the UI's two files.
pub fn routes(cfg: &mut web::ServiceConfig, document: Document) {
    cfg.app_data(web::Data::new(document))
        .route("/docs", web::get().to(page))
        .route("/docs/openapi.json", web::get().to(openapi_json))
        .route(
            "/docs/swagger-ui.css",
            web::get().to(|| async { asset("text/css; charset=utf-8", SWAGGER_UI_CSS) }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            web::get().to(|| async { asset("text/javascript; charset=utf-8", SWAGGER_UI_JS) }),
        );
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("cache-control", "public, max-age=86400"))
        .body(body)
}

async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

// `validatorUrl: null`: Swagger UI would otherwise send the document to a
// public validator, which a page that must work offline cannot rely on.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/docs/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: true
});
</script>
</body>
</html>
"##;

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}
