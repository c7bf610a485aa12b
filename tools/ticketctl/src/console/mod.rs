//! `ticketctl console`: the saga console, a web page for a running cluster
//! (embedded or compose). It shows the events as they happen, one saga's
//! timeline and verdict, the sagas that stalled, the dead letters (and
//! sends them back), and each service's health with the audit on demand.
//!
//! It holds no state of the cluster's own: everything comes from Kafka
//! (read without a consumer group) and the services' health and admin
//! endpoints, through the same functions as `ticketctl events`, `saga`,
//! `dlq`, `status` and `audit`. The page is plain HTML, CSS and JavaScript
//! compiled into this binary: no CDN, nothing to build, works offline.

mod api;
mod live;
mod session;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::TimeDelta;
use clap::Args;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use ticket_runtime::config::{AdminSettings, Secret};
use ticket_runtime::http::admin::{same_secret, AdminKey};
use ticket_runtime::http::error::{json_error, not_found, path_error, query_error};
use ticket_runtime::http::ApiError;

use crate::inspect::{parse_span, ClusterOptions};
use session::{Sessions, SignIn, COOKIE, CSRF_HEADER};

/// Serve the saga console: live events, a saga's timeline and verdict,
/// stalled sagas, dead letters (with redrive) and health, behind the
/// deployment's admin key.
#[derive(Args, Clone, Debug)]
pub struct ConsoleOptions {
    #[command(flatten)]
    pub cluster: ClusterOptions,
    /// The address to listen on (0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "CONSOLE_PORT", default_value_t = 8088)]
    pub port: u16,
    /// How far back the live flow starts, and how far back "stuck" and a
    /// fan's sagas look.
    #[arg(long, default_value = "1h", value_parser = parse_span)]
    pub window: TimeDelta,
    /// Messages kept for a page that opens the live flow.
    #[arg(long, default_value_t = 500)]
    pub history: usize,
    /// A step unanswered this long makes a saga stuck (as `ticketctl saga`).
    #[arg(long, default_value = "120s", value_parser = parse_span)]
    pub stuck_after: TimeDelta,
    /// How long before an id's own time to start reading for its saga.
    #[arg(long, default_value = "60s", value_parser = parse_span)]
    pub slack: TimeDelta,
    /// How long the audit waits for the cluster to settle.
    #[arg(long, default_value = "20s", value_parser = parse_span)]
    pub audit_settle: TimeDelta,
    /// A saga's trace in the tracing UI, `{trace_id}` standing for its id
    /// (e.g. http://localhost:16686/trace/{trace_id} for Jaeger).
    #[arg(long, env = "CONSOLE_TRACE_URL")]
    pub trace_url: Option<String>,
    /// Mark the session cookie Secure even when the request does not say
    /// it came over TLS (a TLS proxy that sets no X-Forwarded-Proto).
    #[arg(long)]
    pub secure_cookies: bool,
}

/// What every request handler shares.
pub struct Console {
    options: ConsoleOptions,
    sessions: Sessions,
    live: Arc<live::Live>,
}

const SIGN_IN: &str = include_str!("assets/sign-in.html");
const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

pub async fn run(options: ConsoleOptions) -> anyhow::Result<()> {
    let key = AdminKey::from_settings(&AdminSettings {
        key: Some(Secret::new(options.cluster.admin_key()?)),
    })?;
    let live = live::Live::start(
        options.cluster.kafka.clone(),
        options.window,
        options.history,
    );
    tokio::spawn(live.clone().tick());
    let address = (options.host.clone(), options.port);
    let console = web::Data::new(Console {
        options,
        sessions: Sessions::new(key),
        live,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(console.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(64 * 1024)
                    .error_handler(json_error),
            )
            .app_data(web::FormConfig::default().limit(4 * 1024))
            .app_data(web::PathConfig::default().error_handler(path_error))
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .wrap(from_fn(guard))
            .service(web::resource("/").get(index))
            .service(web::resource("/sign-in").get(sign_in_page).post(sign_in))
            .service(web::resource("/sign-out").post(sign_out))
            .service(web::resource("/assets/{name}").get(asset))
            // Browsers ask for it on every page; there is none.
            .service(web::resource("/favicon.ico").get(HttpResponse::NoContent))
            .service(
                web::scope("/api")
                    .service(web::resource("/events/live").get(api::events))
                    .service(web::resource("/sagas").get(api::sagas_of_fan))
                    .service(web::resource("/sagas/{id}").get(api::saga))
                    .service(web::resource("/stuck").get(api::stuck))
                    .service(web::resource("/dead-letters").get(api::dead_letters))
                    .service(web::resource("/dead-letters/redrive").post(api::redrive))
                    .service(web::resource("/health").get(api::health))
                    .service(web::resource("/audit").post(api::run_audit)),
            )
            .default_service(web::to(not_found))
    })
    .workers(2)
    .bind(&address)?;
    for bound in server.addrs() {
        println!("console: http://{bound} (sign in with the deployment's admin key)");
    }
    server.run().await?;
    Ok(())
}

/// The session a request carries, if it is live, with its CSRF token.
fn session_of(console: &Console, request: &HttpRequest) -> Option<(String, String)> {
    let id = request.cookie(COOKIE)?.value().to_string();
    let csrf = console.sessions.csrf_of(&id, Instant::now())?;
    Some((id, csrf))
}

/// Everything but the sign-in page and the assets needs a session; every
/// request that changes something needs the session's CSRF token too
/// (sign-in has no session yet, so its Origin must be this host).
async fn guard<B: MessageBody + 'static>(
    request: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let path = request.path().to_string();
    let open = path == "/sign-in" || path == "/favicon.ico" || path.starts_with("/assets/");
    let changes = request.method() != Method::GET && request.method() != Method::HEAD;
    if open {
        if changes && !same_origin(request.request()) {
            return refuse(
                request,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross_site",
                    "a sign-in from another site",
                ),
            );
        }
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let session = request
        .app_data::<web::Data<Console>>()
        .and_then(|console| session_of(console, request.request()));
    let Some((_, csrf)) = session else {
        if path.starts_with("/api/") || changes {
            return refuse(
                request,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "signed_out",
                    "sign in with the admin key first",
                ),
            );
        }
        let (request, _) = request.into_parts();
        let response = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/sign-in"))
            .finish();
        return Ok(ServiceResponse::new(request, response).map_into_right_body());
    };
    if changes {
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), csrf.as_bytes()) || !same_origin(request.request()) {
            return refuse(
                request,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_token_invalid",
                    "this action needs the page's CSRF token",
                ),
            );
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

fn refuse<B>(
    request: ServiceRequest,
    error: ApiError,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let (request, _) = request.into_parts();
    let response = actix_web::ResponseError::error_response(&error);
    Ok(ServiceResponse::new(request, response).map_into_right_body())
}

/// Whether a request's Origin (when the browser sent one) is this host.
fn same_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request.connection_info().host().to_string();
    origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://").map(|(_, rest)| rest.to_string()))
        .is_some_and(|o| o == host)
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        // The page loads only its own script and style, and no other
        // site may frame it.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // Not `no-referrer`: with it a browser sends `Origin: null` on
        // the page's own form posts, which the Origin check refuses.
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(body)
}

fn sign_in_with(status: StatusCode, message: &str) -> HttpResponse {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(r#"<p role="alert" class="error">{}</p>"#, escape(message))
    };
    html(status, SIGN_IN.replace("<!--message-->", &message))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn sign_in_page() -> HttpResponse {
    sign_in_with(StatusCode::OK, "")
}

#[derive(serde::Deserialize)]
struct SignInForm {
    key: String,
}

async fn sign_in(
    console: web::Data<Console>,
    request: HttpRequest,
    form: Result<web::Form<SignInForm>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let Ok(form) = form else {
        return Ok(sign_in_with(
            StatusCode::BAD_REQUEST,
            "Enter the admin key.",
        ));
    };
    let client = request
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let outcome = console
        .sessions
        .sign_in(&form.key, client, Instant::now())
        .map_err(|e| ApiError::unexpected(&*e))?;
    Ok(match outcome {
        SignIn::Admitted { session, .. } => {
            let secure =
                console.options.secure_cookies || request.connection_info().scheme() == "https";
            let cookie = Cookie::build(COOKIE, session)
                .path("/")
                .http_only(true)
                .same_site(SameSite::Strict)
                .secure(secure)
                .finish();
            HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/"))
                .cookie(cookie)
                .finish()
        }
        SignIn::WrongKey => sign_in_with(StatusCode::UNAUTHORIZED, "That is not the admin key."),
        SignIn::Limited(wait) => {
            let mut response = sign_in_with(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-ins; try again in {} s.",
                    wait.as_secs().max(1)
                ),
            );
            if let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    })
}

async fn sign_out(console: web::Data<Console>, request: HttpRequest) -> HttpResponse {
    if let Some((id, _)) = session_of(&console, &request) {
        console.sessions.sign_out(&id);
    }
    let mut gone = Cookie::build(COOKIE, "").path("/").finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/sign-in"))
        .cookie(gone)
        .finish()
}

async fn index(console: web::Data<Console>, request: HttpRequest) -> HttpResponse {
    // The guard let only a live session through.
    let csrf = session_of(&console, &request)
        .map(|(_, csrf)| csrf)
        .unwrap_or_default();
    html(StatusCode::OK, INDEX.replace("{{csrf}}", &csrf))
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found("asset_not_found", "no such asset")),
    };
    Ok(HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body))
}
