//! A fan's moves over HTTP, as the README shows them: join the line, poll,
//! charge, hold, pay, cancel, and read what the services answer.

use reqwest::StatusCode;
use serde_json::{json, Value};
use shared_events::Service;
use ticket_runtime::dev::testkit::eventually;
use uuid::Uuid;

use super::{Cluster, SEAT_MAP_MAX_STALENESS, WAIT};

/// One HTTP call, as data, so that a table of cases keeps one line a case.
#[derive(Debug, Clone)]
pub struct Call {
    pub service: Service,
    pub method: reqwest::Method,
    pub path: String,
    /// JSON text, sent as it is (it may be malformed on purpose).
    pub body: Option<String>,
}

impl Call {
    pub fn get(service: Service, path: impl Into<String>) -> Call {
        Call {
            service,
            method: reqwest::Method::GET,
            path: path.into(),
            body: None,
        }
    }

    pub fn delete(service: Service, path: impl Into<String>) -> Call {
        Call {
            method: reqwest::Method::DELETE,
            ..Call::get(service, path)
        }
    }

    pub fn post(service: Service, path: impl Into<String>, body: impl Into<String>) -> Call {
        Call {
            method: reqwest::Method::POST,
            body: Some(body.into()),
            ..Call::get(service, path)
        }
    }
}

/// Asserts that a request was refused with this status and error code.
pub async fn assert_refused(response: reqwest::Response, status: u16, code: &str, case: &str) {
    let got = response.status().as_u16();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{case}: not JSON: {e}"));
    assert_eq!(
        (got, body["code"].as_str().unwrap_or_default()),
        (status, code),
        "{case}: {body}"
    );
}

impl Cluster {
    /// Sends a call with this member token and pass (either may be absent).
    pub async fn send(
        &self,
        call: &Call,
        member: Option<&str>,
        pass: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(call.method.clone(), self.url(call.service, &call.path));
        if let Some(member) = member {
            request = request.bearer_auth(member);
        }
        if let Some(pass) = pass {
            request = request.header(PASS_HEADER, pass);
        }
        if let Some(body) = &call.body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        request.send().await.unwrap()
    }

    pub async fn schedule(&self) -> (String, String) {
        let concerts: Value = self
            .get_json(self.url(Service::Concert, "/v1/concerts"))
            .await;
        let concert = concerts[0]["id"].as_str().unwrap().to_string();
        let schedules = self
            .get_json(self.url(
                Service::Concert,
                &format!("/v1/concerts/{concert}/schedules"),
            ))
            .await;
        (concert, schedules[0]["id"].as_str().unwrap().to_string())
    }

    pub async fn get_json(&self, url: String) -> Value {
        let response = self.http.get(&url).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// The private key that signs the cluster's passes.
    pub fn pass_private_key(&self) -> String {
        self.keys.0.clone()
    }

    /// Signs a pass with the cluster's real key (for expired passes, say).
    pub fn sign_pass(&self, claims: &ticket_runtime::auth::pass::PassClaims) -> String {
        ticket_runtime::auth::pass::PassSigner::from_base64(&self.keys.0)
            .unwrap()
            .sign(claims)
    }

    /// Joins the line as `user`; returns the token's JSON and the HTTP status.
    pub async fn join(&self, user: Uuid, concert: &str) -> (StatusCode, Value) {
        let url = self.url(Service::Queue, "/v1/queue/tokens");
        let body = json!({ "concert_id": concert });
        let member = self.member_token(user);
        eventually(WAIT, "the queue to know the concert", || async {
            let response = self
                .http
                .post(&url)
                .bearer_auth(&member)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status != StatusCode::NOT_FOUND).then_some(())?;
            Some((status, response.json().await.unwrap()))
        })
        .await
    }

    /// A GET as `member` that must succeed.
    pub async fn get_as(&self, member: &str, url: String) -> Value {
        let response = self
            .http
            .get(&url)
            .bearer_auth(member)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub async fn poll(&self, user: Uuid, token: &str) -> Value {
        self.get_as(
            &self.member_token(user),
            self.url(Service::Queue, &format!("/v1/queue/tokens/{token}")),
        )
        .await
    }

    /// A fan admitted for `concert`, with their pass.
    pub async fn fan(&self, concert: &str) -> Fan {
        let user = Uuid::new_v4();
        let (_, token) = self.join(user, concert).await;
        let token_id = token["token"].as_str().unwrap().to_string();
        let pass = eventually(WAIT, "admission", || async {
            let token = self.poll(user, &token_id).await;
            token["pass"].as_str().map(str::to_string)
        })
        .await;
        Fan {
            user,
            token: token_id,
            pass,
            member: self.member_token(user),
        }
    }

    pub async fn charge(&self, fan: &Fan, amount: i64) {
        let response = self
            .http
            .post(self.url(
                Service::MemberBalance,
                &format!("/v1/members/{}/charges", fan.user),
            ))
            .bearer_auth(&fan.member)
            .json(&json!({ "amount": amount }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    pub async fn balance(&self, fan: &Fan) -> i64 {
        let body = self
            .get_as(
                &fan.member,
                self.url(
                    Service::MemberBalance,
                    &format!("/v1/members/{}/balance", fan.user),
                ),
            )
            .await;
        body["balance"].as_i64().unwrap()
    }

    /// The kinds of the fan's ledger entries, newest first.
    pub async fn ledger_kinds(&self, fan: &Fan) -> Vec<String> {
        let ledger = self
            .get_as(
                &fan.member,
                self.url(
                    Service::MemberBalance,
                    &format!("/v1/members/{}/ledger", fan.user),
                ),
            )
            .await;
        ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    }

    /// What the data platform received for one payment, once it arrives.
    pub async fn delivered(&self, payment_id: &str) -> Value {
        eventually(WAIT, "the data platform delivery", || async {
            let record = self
                .platform
                .records()
                .into_iter()
                .find(|r| r.payment_id.to_string() == payment_id)?;
            // As the platform lists it: the record's wire form.
            Some(serde_json::to_value(record).unwrap())
        })
        .await
    }

    pub async fn reserve(&self, fan: &Fan, schedule: &str, seat_no: i64) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url(Service::Reservation, "/v1/reservations"))
            .bearer_auth(&fan.member)
            .header(PASS_HEADER, &fan.pass)
            .json(&json!({ "schedule_id": schedule, "seat_no": seat_no }))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    pub async fn reservation(&self, fan: &Fan, id: &str) -> Value {
        let response = self
            .http
            .get(self.url(Service::Reservation, &format!("/v1/reservations/{id}")))
            .bearer_auth(&fan.member)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Long-polls until the reservation is in `status`: a plain read
    /// first, then waits naming the version last seen (`If-None-Match`).
    pub async fn reservation_reaches(&self, fan: &Fan, id: &str, status: &str) -> Value {
        let seen = std::sync::Mutex::new(None::<String>);
        eventually(WAIT, &format!("reservation {status}"), || async {
            let tag = seen.lock().unwrap().clone();
            let wait = if tag.is_some() { 2000 } else { 0 };
            let mut request = self
                .http
                .get(self.url(
                    Service::Reservation,
                    &format!("/v1/reservations/{id}?wait_ms={wait}"),
                ))
                .bearer_auth(&fan.member);
            if let Some(tag) = tag {
                request = request.header("if-none-match", tag);
            }
            let response = request.send().await.unwrap();
            if response.status() == StatusCode::NOT_MODIFIED {
                return None;
            }
            let tag = response.headers()["etag"].to_str().unwrap().to_string();
            *seen.lock().unwrap() = Some(tag);
            let body: Value = response.json().await.unwrap();
            (body["status"] == status).then_some(body)
        })
        .await
    }

    /// A HELD reservation of `seat_no`.
    pub async fn hold(&self, fan: &Fan, schedule: &str, seat_no: i64) -> Value {
        let (status, body) = self.reserve(fan, schedule, seat_no).await;
        assert!(status == 201 || status == 202, "{status}: {body}");
        self.reservation_reaches(fan, body["id"].as_str().unwrap(), "HELD")
            .await
    }

    pub async fn pay(
        &self,
        fan: &Fan,
        reservation: &str,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(self.url(Service::Payment, "/v1/payments"))
            .bearer_auth(&fan.member)
            .header(PASS_HEADER, &fan.pass)
            .json(&json!({ "reservation_id": reservation }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// The payment as it stands.
    pub async fn payment(&self, fan: &Fan, id: &str) -> Value {
        let url = self.url(Service::Payment, &format!("/v1/payments/{id}"));
        let response = self
            .http
            .get(&url)
            .bearer_auth(&fan.member)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json().await.unwrap()
    }

    pub async fn cancel(&self, fan: &Fan, reservation: &str) -> (StatusCode, Value) {
        let url = self.url(
            Service::Reservation,
            &format!("/v1/reservations/{reservation}"),
        );
        let response = self
            .http
            .delete(&url)
            .bearer_auth(&fan.member)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// A fan with `balance` on their wallet who holds `seat_no` of a demo
    /// schedule: where most scenarios start.
    pub async fn funded_hold(&self, balance: i64, seat_no: i64) -> (Fan, String, Value) {
        let (concert, schedule) = self.schedule().await;
        let fan = self.fan(&concert).await;
        self.charge(&fan, balance).await;
        let hold = self.hold(&fan, &schedule, seat_no).await;
        (fan, schedule, hold)
    }

    /// Long-polls until the payment is COMPLETED or FAILED.
    pub async fn payment_outcome(&self, fan: &Fan, id: &str) -> Value {
        eventually(WAIT, "the payment's outcome", || async {
            let response = self
                .http
                .get(self.url(
                    Service::Payment,
                    &format!("/v1/payments/{id}?wait_ms=2000&seen_status=PENDING"),
                ))
                .bearer_auth(&fan.member)
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            (body["status"] != "PENDING").then_some(body)
        })
        .await
    }

    /// The seat map of `schedule`, with every seat change the caller knows
    /// of. One instance shows its own changes at once, another's once its
    /// copy is as old as the staleness bound: with several instances the
    /// read waits that long first.
    pub async fn seat_map(&self, schedule: &str) -> Value {
        if self.instances > 1 {
            tokio::time::sleep(SEAT_MAP_MAX_STALENESS).await;
        }
        self.get_json(self.url(Service::Concert, &format!("/v1/schedules/{schedule}/seats")))
            .await
    }

    pub async fn seat_status(&self, schedule: &str, seat_no: i64) -> String {
        let seats = self.seat_map(schedule).await;
        seats[(seat_no - 1) as usize]["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn seat_becomes(&self, schedule: &str, seat_no: i64, status: &str) {
        eventually(WAIT, &format!("seat {seat_no} {status}"), || async {
            (self.seat_status(schedule, seat_no).await == status).then_some(())
        })
        .await;
    }
}

pub struct Fan {
    pub user: Uuid,
    pub token: String,
    pub pass: String,
    /// The fan's member token (Authorization: Bearer).
    pub member: String,
}

pub use ticket_runtime::auth::pass::PASS_HEADER;
