//! An OAuth2 token endpoint for tests, on 127.0.0.1 port 0: it answers POSTs to
//! `/oauth2/v2.0/token` (the Microsoft identity platform's path) the way such endpoints do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// An OAuth2 token endpoint on 127.0.0.1: every POST counts and gets `tok-N` (or, while
/// `revoked` is set, `revoked-N`, which no upstream knows), valid for `EXPIRES_IN` seconds.
pub struct TokenEndpoint {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    pub revoked: Arc<AtomicBool>,
    pub bodies: Arc<Mutex<Vec<String>>>,
}

pub const EXPIRES_IN: i64 = 120;

impl TokenEndpoint {
    pub async fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/oauth2/v2.0/token", listener.local_addr().unwrap());
        let e = TokenEndpoint {
            url,
            requests: Arc::new(AtomicUsize::new(0)),
            revoked: Arc::new(AtomicBool::new(false)),
            bodies: Arc::new(Mutex::new(Vec::new())),
        };
        let (requests, revoked, bodies) = (e.requests.clone(), e.revoked.clone(), e.bodies.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (requests, revoked, bodies) = (requests.clone(), revoked.clone(), bodies.clone());
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Some((head, body)) = read_http_request(&mut stream).await {
                        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                        bodies.lock().unwrap().push(body);
                        let (status, json) = if !head.starts_with("POST /oauth2/v2.0/token ") {
                            ("404 Not Found", r#"{"error":"not_found"}"#.to_string())
                        } else {
                            let token = if revoked.load(Ordering::SeqCst) { format!("revoked-{n}") } else { format!("tok-{n}") };
                            ("200 OK", format!(r#"{{"token_type":"Bearer","expires_in":{EXPIRES_IN},"ext_expires_in":{EXPIRES_IN},"access_token":"{token}"}}"#))
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{json}",
                            json.len()
                        );
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        e
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// One HTTP/1.1 request: the head (request line and headers) and the body.
async fn read_http_request(stream: &mut BufReader<tokio::net::TcpStream>) -> Option<(String, String)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")).map(|(_, v)| v.trim().parse::<usize>()))
        .and_then(Result::ok)
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

