//! HTTP: the public catalog, and the admin API behind `X-Admin-Key`.
//! Thin handlers: request types in, the application layer, response types
//! out.

use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ticket_runtime::http::admin::{Page, PageQuery};
use ticket_runtime::http::utc_millis;
use ticket_runtime::http::ErrorBody;
use ticket_runtime::ids::{ConcertId, PaymentId, ReservationId, ScheduleId};
use ticket_runtime::{ApiError, IntoApiError};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

use crate::app::{Catalog, ConcertError};
use crate::domain::{
    Concert, ConcertPlan, Grade, NewConcert, Schedule, Seat, SeatStatus, TakenSeat,
};

/// The service's API document (served at /docs, checked in as docs/api/concert.json).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_concerts, list_schedules, list_seats, create_concert, list_taken_seats),
    tags(
        (name = "catalog", description = "Concerts, their schedules and each schedule's 50 \
            seats (AVAILABLE, HELD or SOLD). Public: no credential."),
        (name = "admin", description = "Adding concerts, and the taken seats for \
            `ticketctl audit`, behind `X-Admin-Key`. The key is checked before the body \
            is read.")
    )
)]
pub struct ApiDoc;

/// The document as generated from this module; the runtime adds the
/// shared parts (errors, credentials, health) when it serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <ApiDoc as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig, app: Catalog) {
    cfg.app_data(web::Data::new(app))
        .service(web::resource("/v1/concerts").get(list_concerts))
        .service(web::resource("/v1/concerts/{concert_id}/schedules").get(list_schedules))
        .service(web::resource("/v1/schedules/{schedule_id}/seats").get(list_seats))
        .service(
            ticket_runtime::http::admin::scope("/v1/admin")
                .service(web::resource("/concerts").post(create_concert))
                .service(web::resource("/seats").get(list_taken_seats)),
        );
}

impl IntoApiError for ConcertError {
    fn api_error(&self) -> ApiError {
        match self {
            ConcertError::ConcertNotFound(_) => {
                ApiError::not_found("concert_not_found", self.to_string())
            }
            ConcertError::ScheduleNotFound(_) => {
                ApiError::not_found("schedule_not_found", self.to_string())
            }
            ConcertError::Invalid(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_concert",
                self.to_string(),
            ),
            ConcertError::SeatMap(_) => ApiError::unexpected(self),
            ConcertError::Unexpected(e) => ApiError::unexpected(e),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Concert)]
pub struct ConcertBody {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
    #[serde(serialize_with = "utc_millis::serialize")]
    pub created_at: DateTime<Utc>,
}

impl From<Concert> for ConcertBody {
    fn from(c: Concert) -> ConcertBody {
        ConcertBody {
            id: c.id,
            title: c.title,
            venue: c.venue,
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Schedule)]
pub struct ScheduleBody {
    pub id: ScheduleId,
    pub concert_id: ConcertId,
    /// As the organiser gave it.
    pub starts_at: DateTime<Utc>,
    pub available_seats: i64,
}

impl From<Schedule> for ScheduleBody {
    fn from(s: Schedule) -> ScheduleBody {
        ScheduleBody {
            id: s.id,
            concert_id: s.concert_id,
            starts_at: s.starts_at,
            available_seats: s.available_seats,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Seat)]
pub struct SeatBody {
    pub seat_no: i32,
    pub grade: String,
    pub price: i64,
    pub status: SeatStatus,
}

impl From<Seat> for SeatBody {
    fn from(s: Seat) -> SeatBody {
        SeatBody {
            seat_no: s.seat_no,
            grade: s.grade,
            price: s.price,
            status: s.status,
        }
    }
}

/// The body of `GET /v1/schedules/{id}/seats`: written once per read of
/// the database, and kept by the application, which hands it back to
/// every request while it is fresh.
pub fn seat_map_json(seats: Vec<Seat>) -> serde_json::Result<Vec<u8>> {
    let body: Vec<SeatBody> = seats.into_iter().map(SeatBody::from).collect();
    serde_json::to_vec(&body)
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = CreatedConcert)]
pub struct CreatedConcertBody {
    pub id: ConcertId,
    pub title: String,
    pub venue: String,
    pub schedules: Vec<ScheduleBody>,
}

/// The body of `POST /v1/admin/concerts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ConcertRequest {
    /// One line of 1 to 200 characters once trimmed (kept trimmed).
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub title: String,
    /// One line of 1 to 200 characters once trimmed (kept trimmed).
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub venue: String,
    /// 1 to 100, each starting at another time.
    #[schema(min_items = 1, max_items = 100)]
    pub schedules: Vec<ScheduleRequest>,
    /// Price of every seat no grade covers.
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub seat_price: i64,
    /// Blocks of seats at their own price; no seat in two.
    #[serde(default)]
    pub grades: Vec<GradeRequest>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ScheduleRequest {
    pub starts_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct GradeRequest {
    /// One line of 1 to 200 characters once trimmed (kept trimmed).
    #[schema(
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000](?:[^\x00-\x1F\x7F-\x9F]{0,198}[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
    #[schema(minimum = 1, maximum = 50)]
    pub first_seat: u32,
    /// At least `first_seat`.
    #[schema(minimum = 1, maximum = 50)]
    pub last_seat: u32,
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub price: i64,
}

impl From<ConcertRequest> for ConcertPlan {
    fn from(r: ConcertRequest) -> ConcertPlan {
        ConcertPlan {
            title: r.title,
            venue: r.venue,
            schedules: r.schedules.into_iter().map(|s| s.starts_at).collect(),
            seat_price: r.seat_price,
            grades: r
                .grades
                .into_iter()
                .map(|g| Grade {
                    name: g.name,
                    first_seat: g.first_seat,
                    last_seat: g.last_seat,
                    price: g.price,
                })
                .collect(),
        }
    }
}

/// Every concert, oldest first.
#[utoipa::path(get, path = "/v1/concerts", tag = "catalog",
    responses((status = 200, description = "The concerts", body = Vec<ConcertBody>)))]
async fn list_concerts(app: web::Data<Catalog>) -> Result<HttpResponse, ApiError> {
    let concerts: Vec<ConcertBody> = app.concerts().await?.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok().json(concerts))
}

/// A concert's schedules, with how many seats are still available.
#[utoipa::path(get, path = "/v1/concerts/{concert_id}/schedules", tag = "catalog",
    params(("concert_id" = ConcertId, Path)),
    responses(
        (status = 200, description = "The schedules", body = Vec<ScheduleBody>),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`concert_not_found`", body = ErrorBody),
    ))]
async fn list_schedules(
    app: web::Data<Catalog>,
    concert_id: web::Path<ConcertId>,
) -> Result<HttpResponse, ApiError> {
    let schedules: Vec<ScheduleBody> = app
        .schedules(concert_id.into_inner())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(schedules))
}

/// A schedule's 50 seats with grade, price and status.
#[utoipa::path(get, path = "/v1/schedules/{schedule_id}/seats", tag = "catalog",
    params(("schedule_id" = ScheduleId, Path)),
    responses(
        (status = 200, description = "The seats, by number", body = Vec<SeatBody>),
        (status = 400, description = "`invalid_path`", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
    ))]
async fn list_seats(
    app: web::Data<Catalog>,
    schedule_id: web::Path<ScheduleId>,
) -> Result<HttpResponse, ApiError> {
    let body = app.seat_map(schedule_id.into_inner()).await?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(body))
}

/// Compares without leaking, through timing, how much of the key matched.
/// Add a concert with its schedules; each schedule gets 50 seats priced by
/// grade (seats no grade covers cost `seat_price`).
#[utoipa::path(post, path = "/v1/admin/concerts", tag = "admin",
    request_body = ConcertRequest,
    security(("admin_key" = [])),
    responses(
        (status = 201, description = "Created, with its schedules", body = CreatedConcertBody),
        (status = 401, description = "`admin_key_invalid`: missing or wrong X-Admin-Key", body = ErrorBody),
        (status = 422, description = "`invalid_concert`: empty title or venue, a control character (NUL, line break, ...) in a title, venue or grade name, no schedule, a grade with first_seat after last_seat, overlapping grades, two schedules at one time, ...", body = ErrorBody),
    ))]
async fn create_concert(
    app: web::Data<Catalog>,
    body: web::Json<ConcertRequest>,
) -> Result<HttpResponse, ApiError> {
    let concert =
        NewConcert::try_from(ConcertPlan::from(body.into_inner())).map_err(ConcertError::from)?;
    let (created, schedules) = app.create(concert).await?;
    Ok(HttpResponse::Created().json(CreatedConcertBody {
        id: created.id,
        title: created.title,
        venue: created.venue,
        schedules: schedules.into_iter().map(Into::into).collect(),
    }))
}

/// A seat that is HELD or SOLD, and for which reservation (and payment).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = TakenSeat)]
pub struct TakenSeatBody {
    /// Absent only when the data is broken.
    pub reservation_id: Option<ReservationId>,
    pub schedule_id: ScheduleId,
    pub seat_no: i32,
    pub status: SeatStatus,
    pub payment_id: Option<PaymentId>,
}

impl From<TakenSeat> for TakenSeatBody {
    fn from(s: TakenSeat) -> TakenSeatBody {
        TakenSeatBody {
            reservation_id: s.reservation_id,
            schedule_id: s.schedule_id,
            seat_no: s.seat_no,
            status: s.status,
            payment_id: s.payment_id,
        }
    }
}

/// Where a page of taken seats ends: `SCHEDULE_ID/SEAT_NO`.
#[derive(Debug, Clone, Copy)]
pub struct SeatKey(ScheduleId, i32);

impl Serialize for SeatKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}/{}", self.0, self.1))
    }
}

/// What the listing hands out as `next`, and all `after` needs to be.
impl utoipa::PartialSchema for SeatKey {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/[0-9]{1,9}$",
            ))
            .description(Some("`SCHEDULE_ID/SEAT_NO`"))
            .into()
    }
}

impl<'de> Deserialize<'de> for SeatKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SeatKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = text
            .split_once('/')
            .and_then(|(schedule, seat)| Some(SeatKey(schedule.parse().ok()?, seat.parse().ok()?)));
        parsed.ok_or_else(|| serde::de::Error::custom("expected SCHEDULE_ID/SEAT_NO"))
    }
}

/// Every HELD or SOLD seat, in schedule and seat order.
#[utoipa::path(get, path = "/v1/admin/seats", tag = "admin",
    params(PageQuery<SeatKey>),
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "A page of taken seats", body = Page<TakenSeatBody, String>),
        (status = 400, description = "`invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 401, description = "`admin_key_invalid`", body = ErrorBody),
    ))]
async fn list_taken_seats(
    app: web::Data<Catalog>,
    query: web::Query<PageQuery<SeatKey>>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let after = query
        .after
        .map(|SeatKey(schedule, seat_no)| (schedule, seat_no));
    let seats = app.taken_seats(after, limit).await?;
    let items = seats.into_iter().map(TakenSeatBody::from).collect();
    Ok(
        HttpResponse::Ok().json(Page::of(items, limit, |s: &TakenSeatBody| {
            SeatKey(s.schedule_id, s.seat_no)
        })),
    )
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests: a panic is a failed test, with its message"
    )]

    use super::*;
    use utoipa::PartialSchema;

    /// The pattern the document gives titles, venues and grade names.
    fn documented_pattern() -> regex_lite::Regex {
        let schema = serde_json::to_value(ConcertRequest::schema()).unwrap();
        let pattern = schema["properties"]["title"]["pattern"].as_str().unwrap();
        assert_eq!(schema["properties"]["venue"]["pattern"], pattern);
        let grade = serde_json::to_value(GradeRequest::schema()).unwrap();
        assert_eq!(grade["properties"]["name"]["pattern"], pattern);
        regex_lite::Regex::new(pattern).unwrap()
    }

    fn catalog_accepts(title: &str) -> bool {
        let plan = ConcertPlan {
            title: title.to_string(),
            venue: "Hall".into(),
            schedules: vec![DateTime::<Utc>::UNIX_EPOCH],
            seat_price: 1,
            grades: vec![],
        };
        NewConcert::try_from(plan).is_ok()
    }

    /// A client can tell from the document which names the catalog takes:
    /// trimmed of white space, one line of 1 to 200 characters without a
    /// control character.
    #[test]
    fn the_documented_name_pattern_is_the_catalogs_rule() {
        let pattern = documented_pattern();
        let long = "a".repeat(200);
        let names = [
            "Indie Night".to_string(),
            " Indie Night\t\n".to_string(),
            "\u{85}\u{3000}Night\u{a0}".to_string(),
            "a b".to_string(),
            "a\u{2003}b".to_string(),
            format!("  {long}  "),
            format!("{long}a"),
            String::new(),
            "   ".to_string(),
            "\u{3000}\t".to_string(),
            "Night\u{0}".to_string(),
            "\u{0}Night".to_string(),
            "a\nb".to_string(),
            "a\tb".to_string(),
            "\u{1c}Night".to_string(),
            "Night\u{7f}".to_string(),
            "a\u{85}b".to_string(),
            "\u{feff}".to_string(),
            "\u{200b}".to_string(),
            "夜".to_string(),
            "🎸".repeat(200),
            "🎸".repeat(201),
        ];
        for name in names {
            assert_eq!(
                pattern.is_match(&name),
                catalog_accepts(&name),
                "{name:?}: the document and the catalog disagree"
            );
        }
    }
}
