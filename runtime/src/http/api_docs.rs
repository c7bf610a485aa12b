//! API documents. Each service's OpenAPI document is generated from its
//! handlers and request/response types (`utoipa`); [`complete`] adds what
//! every service shares — the error body, the three credentials, the
//! health and metrics endpoints, the errors the runtime answers before a
//! handler runs — and [`routes`] serves it with Swagger UI
//! at `/docs`. The Swagger UI files are compiled into the binary (see
//! assets/swagger-ui/README.md), so the page needs no network. The same
//! documents are checked into docs/api/, and a test fails when they drift.

use actix_web::{web, HttpResponse};
use shared_events::Service;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, Content, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::http::ErrorBody;

/// `Authorization: Bearer <member token>`: who the fan is.
pub const MEMBER_TOKEN: &str = "member_token";
/// `Queue-Pass: <pass>`: the fan was admitted from the waiting line.
pub const QUEUE_PASS: &str = "queue_pass";
/// `X-Admin-Key: <key>`: the deployment's administrator.
pub const ADMIN_KEY: &str = "admin_key";

const SWAGGER_UI_CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");
const SWAGGER_UI_JS: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");

/// The endpoints every service serves (runtime/src/http.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    crate::http::server::live,
    crate::http::server::ready,
    crate::http::server::metrics
))]
struct Shared;

/// A service's document with the shared parts added.
pub fn complete(service: Service, mut document: OpenApi) -> OpenApi {
    document.info.title = format!("{service} service");
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    document.merge(Shared::openapi());
    document_extractor_errors(&mut document);
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

/// The errors runtime/src/http.rs answers when a request's JSON body, path
/// or query cannot be read (before the handler runs), with their codes:
/// what a JSON body can get, a path parameter, a query parameter.
const BODY_ERRORS: [(&str, &str, &str); 5] = [
    ("400", "malformed_json", "the body is not JSON"),
    (
        "408",
        "request_timeout",
        "the body did not arrive within `http.client_body_timeout_ms`",
    ),
    (
        "413",
        "payload_too_large",
        "the body is over `http.body_limit_bytes`",
    ),
    (
        "415",
        "unsupported_media_type",
        "not `Content-Type: application/json`",
    ),
    (
        "422",
        "invalid_body",
        "JSON of another shape: a field missing or of another type",
    ),
];
const PATH_ERROR: (&str, &str, &str) = ("400", "invalid_path", "a malformed path parameter");
const QUERY_ERROR: (&str, &str, &str) = ("400", "invalid_query", "a malformed query parameter");

/// Adds the runtime's errors to every operation they can reach, so that
/// no handler has to list them and none can forget one.
fn document_extractor_errors(document: &mut OpenApi) {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let takes = |place: ParameterIn| {
                operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == place)
            };
            let mut errors = Vec::new();
            if operation.request_body.is_some() {
                errors.extend(BODY_ERRORS);
            }
            if takes(ParameterIn::Path) {
                errors.push(PATH_ERROR);
            }
            if takes(ParameterIn::Query) {
                errors.push(QUERY_ERROR);
            }
            for error in errors {
                add_error(operation, error);
            }
        }
    }
}

/// A new response for the status, or the code added to the handler's own
/// description of it when that does not name it yet.
fn add_error(operation: &mut Operation, (status, code, why): (&str, &str, &str)) {
    let named = format!("`{code}`");
    let line = format!("{named}: {why}");
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(&named) {
                response.description.push_str("; ");
                response.description.push_str(&line);
            }
        }
        // The shared documents use no response references.
        Some(RefOr::Ref(_)) => {}
        None => {
            let body = Content::new(Some(Ref::from_schema_name(ErrorBody::name())));
            let response = ResponseBuilder::new()
                .description(line)
                .content("application/json", body)
                .build();
            operation
                .responses
                .responses
                .insert(status.to_string(), RefOr::T(response));
        }
    }
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
        .service(web::resource("/docs").get(page))
        .service(web::resource("/docs/openapi.json").get(openapi_json))
        .service(
            web::resource("/docs/swagger-ui.css")
                .get(|| async { asset("text/css; charset=utf-8", SWAGGER_UI_CSS) }),
        )
        .service(
            web::resource("/docs/swagger-ui-bundle.js")
                .get(|| async { asset("text/javascript; charset=utf-8", SWAGGER_UI_JS) }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::RefOr;

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    struct Thing {
        #[allow(dead_code)]
        name: String,
    }

    #[utoipa::path(post, path = "/things/{id}", request_body = Thing,
        params(("id" = uuid::Uuid, Path), ("limit" = Option<i64>, Query)),
        responses(
            (status = 201, description = "Made"),
            (status = 400, description = "`invalid_thing`", body = ErrorBody),
        ))]
    #[allow(dead_code)]
    async fn make_thing() {}

    #[derive(utoipa::OpenApi)]
    #[openapi(paths(make_thing))]
    struct Things;

    fn responses_of(document: &OpenApi, path: &str) -> Vec<(String, String)> {
        let item = &document.paths.paths[path];
        let operation = item.post.as_ref().or(item.get.as_ref()).unwrap();
        operation
            .responses
            .responses
            .iter()
            .map(|(status, response)| match response {
                RefOr::T(response) => (status.clone(), response.description.clone()),
                RefOr::Ref(_) => (status.clone(), String::new()),
            })
            .collect()
    }

    #[test]
    fn what_the_runtime_answers_before_a_handler_is_documented_where_it_can_happen() {
        let document = complete(Service::Concert, Things::openapi());
        let responses = responses_of(&document, "/things/{id}");
        let described = |status: &str| {
            responses
                .iter()
                .find(|(s, _)| s == status)
                .map(|(_, d)| d.clone())
                .unwrap_or_default()
        };
        // The handler's own 400 keeps its code and gains the runtime's.
        for code in [
            "invalid_thing",
            "malformed_json",
            "invalid_path",
            "invalid_query",
        ] {
            assert!(
                described("400").contains(&format!("`{code}`")),
                "{responses:?}"
            );
        }
        assert!(
            described("408").contains("`request_timeout`"),
            "{responses:?}"
        );
        assert!(
            described("413").contains("`payload_too_large`"),
            "{responses:?}"
        );
        assert!(
            described("415").contains("`unsupported_media_type`"),
            "{responses:?}"
        );
        assert!(described("422").contains("`invalid_body`"), "{responses:?}");

        // A bodiless operation without parameters gets none of them.
        let health = responses_of(&document, "/health/live");
        assert_eq!(health.len(), 1, "{health:?}");
    }
}
