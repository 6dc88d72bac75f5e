//! A small HTTP client for the admin API tests (ureq underneath): every answer,
//! error statuses included, comes back as status, headers and body.

#![allow(dead_code)] // each test file uses its own part of this module

use std::time::Duration;

use serde_json::Value;

/// An admin API at `base`, with a token or without.
pub struct Http {
    agent: ureq::Agent,
    /// `http://host:port`.
    pub base: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: ureq::http::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics, with the body, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` sentence of an error answer (and checks it is JSON with one).
    pub fn error(&self) -> String {
        let v = self.json();
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{self:?}"
        );
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {v}"))
            .to_string()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Http {
    /// A client of the admin API at `addr` (`host:port`).
    pub fn new(addr: &str, token: Option<&str>) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Http {
            agent,
            base: format!("http://{addr}"),
            token: token.map(str::to_string),
        }
    }

    /// The same API with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Http {
        Http::new(self.base.trim_start_matches("http://"), token)
    }

    fn finish(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = result.expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("read the body");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        let mut r = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        Http::finish(r.call())
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Answer {
        let mut r = self.agent.delete(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        Http::finish(r.call())
    }

    /// `method path` with `body` of `content_type`.
    pub fn send(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "POST" => self.agent.post(url),
            "PUT" => self.agent.put(url),
            "PATCH" => self.agent.patch(url),
            other => panic!("no body for {other}"),
        };
        if let Some(t) = &self.token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        Http::finish(r.content_type(content_type).send(body))
    }

    /// `method path` with a JSON body.
    pub fn json(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.send(
            method,
            path,
            &serde_json::to_vec(body).unwrap(),
            "application/json",
        )
    }
}
