//! Where the store connects: one Redis, a Redis Cluster, or the primary Sentinel names.
//!
//! One string names each (the form [`RedisTokenStore::builder`](super::RedisTokenStore)
//! and the example server's `MPAUTHX_REDIS_URL` accept):
//!
//! - `redis://[[user]:password@]host:port[/db]` (or `rediss://`, `unix://`): standalone.
//! - `redis+cluster://[[user]:password@]host:port[,host:port…][/]`: a Redis Cluster,
//!   reached through any of the listed seed nodes; the credentials apply to every node.
//! - `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/db]`:
//!   the primary that the listed Sentinels name `<master name>`. The credentials and
//!   the database apply to the primary; the Sentinels are reached without them.
//!
//! `rediss+cluster://` and `rediss+sentinel://` ask for TLS to the data nodes, which
//! needs TLS support enabled in `redis`.

/// A parsed connection target; URLs inside are checked by `redis` when the store builds.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// One Redis at this URL.
    Standalone(String),
    /// A Redis Cluster, reached through these seed node URLs.
    Cluster(Vec<String>),
    /// The primary that the Sentinels at these URLs name `master`.
    Sentinel {
        /// `redis://host:port` of each Sentinel.
        sentinels: Vec<String>,
        /// The name the Sentinels monitor the primary under.
        master: String,
        /// How to reach the primary once found: credentials and database.
        node: NodeAuth,
    },
}

/// Credentials and database for the data nodes behind Sentinel.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct NodeAuth {
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: i64,
    pub(super) tls: bool,
}

/// A multi-node URL that does not parse.
pub(super) type ParseError = &'static str;

impl Target {
    /// Reads a target from its URL form (see the module docs).
    pub(super) fn parse(url: &str) -> Result<Self, ParseError> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(Self::Standalone(url.to_owned()));
        };
        let (node_scheme, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis+cluster" => ("redis", Kind::Cluster),
            "rediss+cluster" => ("rediss", Kind::Cluster),
            "redis+sentinel" => ("redis", Kind::Sentinel),
            "rediss+sentinel" => ("rediss", Kind::Sentinel),
            _ => return Ok(Self::Standalone(url.to_owned())),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
        if hosts
            .iter()
            .any(|h| h.is_empty() || h.contains(['/', '?', '#']))
        {
            return Err("every host of a multi-node Redis URL must be host:port");
        }
        match kind {
            Kind::Cluster => {
                if !path.is_empty() {
                    return Err("a redis+cluster URL takes no path: a cluster has only db 0");
                }
                let creds = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
                Ok(Self::Cluster(
                    hosts
                        .iter()
                        .map(|h| format!("{node_scheme}://{creds}{h}/"))
                        .collect(),
                ))
            }
            Kind::Sentinel => {
                let mut segments = path.split('/');
                let master = segments.next().unwrap_or_default();
                if master.is_empty() {
                    return Err("a redis+sentinel URL needs /<master name> after the hosts");
                }
                let db = match segments.next() {
                    None | Some("") => 0,
                    Some(db) => db
                        .parse()
                        .map_err(|_| "the database in a redis+sentinel URL must be a number")?,
                };
                if segments.any(|s| !s.is_empty()) {
                    return Err("a redis+sentinel URL ends after /<master name>/<db>");
                }
                let (username, password) = match userinfo {
                    None => (None, None),
                    Some(userinfo) => {
                        let (user, password) = match userinfo.split_once(':') {
                            Some((user, password)) => (user, Some(password)),
                            None => (userinfo, None),
                        };
                        let decode = |s: &str| {
                            percent_decode(s).ok_or("malformed %-escape in a redis+sentinel URL")
                        };
                        (
                            Some(decode(user)?).filter(|u| !u.is_empty()),
                            password.map(decode).transpose()?,
                        )
                    }
                };
                Ok(Self::Sentinel {
                    sentinels: hosts.iter().map(|h| format!("redis://{h}/")).collect(),
                    master: percent_decode(master)
                        .ok_or("malformed %-escape in a redis+sentinel URL")?,
                    node: NodeAuth {
                        username,
                        password,
                        db,
                        tls: node_scheme == "rediss",
                    },
                })
            }
        }
    }
}

enum Kind {
    Cluster,
    Sentinel,
}

/// Decodes `%XX` escapes, as URLs carry reserved characters in credentials.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone(url: &str) -> Target {
        Target::Standalone(url.to_owned())
    }

    #[test]
    fn plain_urls_are_standalone() {
        for url in [
            "redis://127.0.0.1:6379/",
            "rediss://:pw@example.com:6380/2",
            "unix:///run/redis.sock",
            "not a url",
        ] {
            assert!(Target::parse(url) == Ok(standalone(url)), "{url}");
        }
    }

    #[test]
    fn cluster_urls_list_their_seeds() {
        let Ok(Target::Cluster(seeds)) =
            Target::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001, [::1]:7002/")
        else {
            panic!("a cluster target");
        };
        assert_eq!(
            seeds,
            [
                "redis://127.0.0.1:7000/",
                "redis://127.0.0.1:7001/",
                "redis://[::1]:7002/"
            ]
        );
        let Ok(Target::Cluster(seeds)) = Target::parse("rediss+cluster://u:p%40ss@h:1") else {
            panic!("a cluster target");
        };
        assert_eq!(
            seeds,
            ["rediss://u:p%40ss@h:1/"],
            "credentials go to every node"
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/3",
            "redis+cluster://h:1?x=1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinel_urls_name_the_master() {
        let Ok(Target::Sentinel {
            sentinels,
            master,
            node,
        }) = Target::parse("redis+sentinel://:s%3Acret@10.0.0.1:26379,10.0.0.2:26379/mymaster/3")
        else {
            panic!("a sentinel target");
        };
        assert_eq!(
            sentinels,
            ["redis://10.0.0.1:26379/", "redis://10.0.0.2:26379/"]
        );
        assert_eq!(master, "mymaster");
        assert!(
            node == NodeAuth {
                username: None,
                password: Some("s:cret".into()),
                db: 3,
                tls: false
            }
        );
        let Ok(Target::Sentinel { node, .. }) = Target::parse("rediss+sentinel://app@h:1/m/")
        else {
            panic!("a sentinel target");
        };
        assert!(
            node == NodeAuth {
                username: Some("app".into()),
                password: None,
                db: 0,
                tls: true
            }
        );
        for bad in [
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:1/m/x",
            "redis+sentinel://h:1/m/0/extra",
            "redis+sentinel://,h:1/m",
            "redis+sentinel://:%zz@h:1/m",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
