//! Secrets out of URLs: the credentials a NATS URL carries (`nats://user:password@host`,
//! `nats://token@host`) are read here and the URL is stripped of them before anything logs
//! it; a callback URL loses its userinfo and query before it is logged.
//!
//! async-nats 0.51 ignores URL userinfo (nats.rs issue #1623): without this, the URL form
//! every other NATS client accepts connects without credentials and is refused.

/// Credentials written in a server URL.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlCredentials::UserPassword { user, .. } => {
                write!(f, "UserPassword {{ user: {user:?}, password: *** }}")
            }
            UrlCredentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Where the userinfo of `url` lies: (start, end) of `user[:password]`, without the `@`.
fn userinfo_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map(|i| start + i)
        .unwrap_or(url.len());
    let at = url[start..authority_end].rfind('@')? + start;
    Some((start, at))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(Ok(b)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `nats://user:password@host:4222` into `nats://host:4222` and its credentials
/// (percent-decoded). A URL without userinfo comes back as it is.
pub fn split_nats_url(url: &str) -> (String, Option<UrlCredentials>) {
    let Some((start, at)) = userinfo_span(url) else {
        return (url.to_string(), None);
    };
    let info = &url[start..at];
    let creds = match info.split_once(':') {
        Some((user, password)) => UrlCredentials::UserPassword {
            user: percent_decode(user),
            password: percent_decode(password),
        },
        None => UrlCredentials::Token(percent_decode(info)),
    };
    let stripped = format!("{}{}", &url[..start], &url[at + 1..]);
    let creds = match &creds {
        UrlCredentials::Token(t) if t.is_empty() => None,
        _ => Some(creds),
    };
    (stripped, creds)
}

/// A URL safe to log: userinfo replaced by `***`, query and fragment by `?***`.
pub fn url(url: &str) -> String {
    let mut out = match userinfo_span(url) {
        Some((start, at)) => format!("{}***{}", &url[..start], &url[at..]),
        None => url.to_string(),
    };
    if let Some(q) = out.find(['?', '#']) {
        out.truncate(q);
        out.push_str("?***");
    }
    out
}

/// [`url`] over a list, comma separated.
pub fn urls<S: AsRef<str>>(list: &[S]) -> String {
    list.iter()
        .map(|u| url(u.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `text` with every occurrence of each non-empty `secret` replaced by `***` (for error
/// messages from libraries that may quote what they were given).
pub fn secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_password_are_read_from_the_url_and_stripped() {
        let (u, c) = split_nats_url("nats://alice:s3cret%40PW@127.0.0.1:4222");
        assert_eq!(u, "nats://127.0.0.1:4222");
        assert_eq!(
            c,
            Some(UrlCredentials::UserPassword {
                user: "alice".into(),
                password: "s3cret@PW".into()
            })
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_bare_userinfo_is_a_token() {
        let (u, c) = split_nats_url("tls://tok123@nats.example:4222/");
        assert_eq!(u, "tls://nats.example:4222/");
        assert_eq!(c, Some(UrlCredentials::Token("tok123".into())));
        let (u, c) = split_nats_url("127.0.0.1:4222");
        assert_eq!((u.as_str(), c), ("127.0.0.1:4222", None));
    }

    #[test]
    fn logged_urls_carry_no_userinfo_or_query() {
        assert_eq!(
            url("http://hookuser:hookSecret@127.0.0.1:9/hook?token=abc123"),
            "http://***@127.0.0.1:9/hook?***"
        );
        assert_eq!(url("nats://a:b@h:1,"), "nats://***@h:1,");
        assert_eq!(url("http://h/p"), "http://h/p");
        assert_eq!(
            secrets("bad pw s3cret here", &["s3cret", ""]),
            "bad pw *** here"
        );
    }
}
