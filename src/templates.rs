//! Files `shipit init` writes: the config, and production-shaped templates
//! for the tools around a deploy (systemd, nginx, pm2, the git hook).
//!
//! Templates live in `templates/` as real files with `@NAME@` placeholders,
//! so they can be read and reviewed as what they are. Placeholders are
//! filled in one pass (a value is never searched again), and each value is
//! escaped for the format it lands in (systemd quoting in unit files, nginx
//! strings, JSON strings in JavaScript, shell quoting in the hook); names
//! that become identifiers or file names are checked.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::config::check_app;
use crate::error::{Error, Result};
use crate::githook::{self, Mode};
use crate::placeholders::fill;

/// The files `shipit init --template` writes (their `--template` names
/// and help come from here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A systemd service that runs from `current`, with graceful stop
    Systemd,
    /// A systemd socket unit for socket activation
    SystemdSocket,
    /// An nginx site with two local app instances behind one upstream
    Nginx,
    /// A pm2 ecosystem file in cluster mode with graceful reloads
    Pm2,
    /// The push-to-deploy git hook (post-receive)
    GitHook,
    /// Slots: an nginx site proxying to the live slot's socket link
    NginxSlots,
    /// Slots: a pm2 file that runs one release per slot on its socket
    Pm2Slots,
    /// Slots: a systemd template unit, one instance per slot (APP@blue, APP@green)
    SystemdSlots,
}

impl Template {
    pub const EACH: [Template; 8] = [
        Template::Systemd,
        Template::SystemdSocket,
        Template::Nginx,
        Template::Pm2,
        Template::GitHook,
        Template::NginxSlots,
        Template::Pm2Slots,
        Template::SystemdSlots,
    ];

    pub fn file_name(self, app: &str) -> String {
        match self {
            Template::Systemd => format!("{app}.service"),
            Template::SystemdSocket => format!("{app}.socket"),
            Template::Nginx => format!("nginx-{app}.conf"),
            Template::Pm2 => "ecosystem.config.js".into(),
            Template::GitHook => "post-receive".into(),
            Template::NginxSlots => format!("nginx-{app}-slots.conf"),
            Template::Pm2Slots => "slots.config.js".into(),
            Template::SystemdSlots => format!("{app}@.service"),
        }
    }
}

/// What the templates are filled in with.
#[derive(Clone, Debug)]
pub struct Values {
    pub app: String,
    pub deploy_to: PathBuf,
    pub port: u16,
    /// The port nginx listens on: health.url's, when the app listens on
    /// another one (health.url then goes through the front); else 80.
    pub listen: u16,
    pub health_url: String,
    pub user: String,
}

impl Values {
    /// Values for a fresh `shipit.toml`.
    pub fn fresh(app: &str) -> Result<Values> {
        check_app(app)?;
        Ok(Values {
            app: app.to_string(),
            deploy_to: PathBuf::from(format!("/srv/{app}")),
            port: 3000,
            listen: 80,
            health_url: "http://127.0.0.1:3000/healthz".into(),
            user: crate::whoami::user(),
        })
    }

    /// Values read from a loaded config. The app name defaults to the last
    /// part of `deploy_to`; the app's port to `port`, else the health
    /// URL's (else 3000). A health URL on another port than the app's is
    /// the front's, and the nginx sites listen there.
    pub fn from_config(config: &Config, app: Option<&str>, port: Option<u16>) -> Result<Values> {
        let app = match app.or(config.app.as_deref()) {
            Some(a) => a.to_string(),
            None => config
                .deploy_to
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "app".into()),
        };
        check_app(&app)
            .map_err(|e| e.hint("name the app with --app NAME (letters, digits, . _ -)"))?;
        let health_url = config
            .health
            .as_ref()
            .map(|h| h.url.clone())
            .unwrap_or_else(|| "http://127.0.0.1:3000/healthz".into());
        let health_port = port_of(&health_url);
        let port = port.or(health_port).unwrap_or(3000);
        let listen = health_port.filter(|p| *p != port).unwrap_or(80);
        Ok(Values {
            port,
            listen,
            app,
            deploy_to: config.deploy_to.clone(),
            health_url,
            user: crate::whoami::user(),
        })
    }

    fn health_path(&self) -> String {
        let rest = self.health_url.trim_start_matches("http://");
        match rest.find('/') {
            Some(i) => rest[i..]
                .split(['?', '#'])
                .next()
                .unwrap_or("/")
                .to_string(),
            None => "/".into(),
        }
    }
}

/// A warning for a unit that would run the app as root: `init` fills
/// `User=` with whoever runs it, and run as root that is root.
pub fn root_user_warning(template: Template, values: &Values) -> Option<String> {
    let unit = matches!(template, Template::Systemd | Template::SystemdSlots);
    (unit && values.user == "root").then(|| {
        let app = &values.app;
        format!(
            "{} runs the app as root (User=root, because init ran as root): a flaw in the app \
             would then own the machine. Make it a dedicated user: `useradd --system \
             --no-create-home {app}`, set User={app} in the unit, and let that user read {}",
            template.file_name(app),
            values.deploy_to.display()
        )
    })
}

/// The port of an `http://host:port/...` URL.
fn port_of(url: &str) -> Option<u16> {
    let host = url.strip_prefix("http://")?.split('/').next()?;
    host.rsplit_once(':')?.1.parse().ok()
}

fn json(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A commented `shipit.toml` documenting every key.
pub fn config(values: &Values) -> String {
    fill(
        include_str!("../templates/shipit.toml"),
        &[
            ("APP", &values.app),
            ("DEPLOY_TO", &values.deploy_to.display().to_string()),
            ("GIT", &format!("/srv/git/{}.git", values.app)),
            ("HEALTH_URL", &values.health_url),
        ],
    )
}

/// Render one template. `config_file` is the config the git hook runs with.
/// Each value is escaped for the format it lands in; a value no escaping can
/// carry (a control character anywhere, a `$` in an nginx path) is refused.
pub fn render(template: Template, values: &Values, config_file: &Path) -> Result<String> {
    let deploy_to = values.deploy_to.display().to_string();
    if deploy_to.chars().any(char::is_control) {
        return Err(Error::usage(format!(
            "deploy_to {deploy_to:?} holds a control character, which no template can carry"
        ))
        .hint("use a deploy_to without newlines or tabs"));
    }
    let current = format!("{deploy_to}/current");
    let port = values.port.to_string();
    let listen = values.listen.to_string();
    let health_path = values.health_path();
    let common = [
        ("APP", values.app.as_str()),
        ("DEPLOY_TO", deploy_to.as_str()),
        ("PORT", port.as_str()),
        ("LISTEN", listen.as_str()),
        ("USER", values.user.as_str()),
        ("HEALTH_PATH", health_path.as_str()),
    ];
    // shipit.toml's env_file where `init` suggests it: the app reads the
    // secrets the hooks get.
    let env_file = systemd_path(&format!("{deploy_to}/shared/.env"));
    let with = |text: &str, extra: &[(&str, &str)]| {
        let all: Vec<(&str, &str)> = extra.iter().chain(common.iter()).copied().collect();
        fill(text, &all)
    };
    Ok(match template {
        Template::Systemd => with(
            include_str!("../templates/systemd.service"),
            &[
                ("WORKING_DIRECTORY", &systemd_path(&current)),
                (
                    "EXEC_START",
                    &systemd_exec_word(&format!("{current}/bin/start")),
                ),
                ("ENV_FILE", &env_file),
            ],
        ),
        Template::SystemdSocket => with(include_str!("../templates/systemd.socket"), &[]),
        Template::SystemdSlots => {
            // `%i` is the slot: these paths name the slot's release link
            // and socket, which shipit keeps under run/.
            let run = format!("{deploy_to}/run/");
            with(
                include_str!("../templates/systemd-slots.service"),
                &[
                    (
                        "WORKING_DIRECTORY",
                        &format!("{}%i.release", systemd_path(&run)),
                    ),
                    (
                        "EXEC_START",
                        &format!("\"{}%i.release/bin/start\"", systemd_exec_escape(&run)),
                    ),
                    ("ENV_FILE", &env_file),
                    (
                        "SOCKET_ENV",
                        &format!(
                            "\"SOCKET={run}%i.sock\" \"SLOT_LINK={run}app.sock\"",
                            run = systemd_env_escape(&run)
                        ),
                    ),
                ],
            )
        }
        Template::Nginx => with(
            include_str!("../templates/nginx.conf"),
            &[("ROOT", &nginx_string(&format!("{current}/public"))?)],
        ),
        Template::Pm2 => with(
            include_str!("../templates/ecosystem.config.js"),
            &[
                ("CURRENT_JSON", &json(&current)),
                ("SCRIPT_JSON", &json(&format!("{current}/server.js"))),
                ("APP_JSON", &json(&values.app)),
                ("PORT_JSON", &json(&port)),
            ],
        ),
        // With slots health.url is the front's URL (the gate probes only
        // its path on the slot's socket): nginx listens on its port.
        Template::NginxSlots => with(
            include_str!("../templates/nginx-slots.conf"),
            &[
                (
                    "APP_SOCKET",
                    &nginx_string(&format!("unix:{deploy_to}/run/app.sock"))?,
                ),
                (
                    "LISTEN",
                    &port_of(&values.health_url).unwrap_or(80).to_string(),
                ),
            ],
        ),
        Template::Pm2Slots => with(
            include_str!("../templates/slots.config.js"),
            &[("APP_JSON", &json(&values.app))],
        ),
        Template::GitHook => {
            let shipit = std::env::current_exe()
                .and_then(std::fs::canonicalize)
                .map_err(|e| Error::internal("could not find the shipit binary").cause(e))?;
            githook::render(Mode::PostReceive, &shipit, config_file, None)
        }
    })
}

/// A path for a systemd setting that takes one path (WorkingDirectory=):
/// the whole value is the path, spaces included; only `%` specifiers
/// need escaping (systemd.unit(5), "Specifiers").
fn systemd_path(path: &str) -> String {
    path.replace('%', "%%")
}

/// One word of an Exec*= command line: double-quoted, with `\` and `"`
/// escaped, `$` doubled (no variable expansion) and `%` doubled (no
/// specifier), as systemd.service(5) "Command lines" describes.
fn systemd_exec_word(word: &str) -> String {
    format!("\"{}\"", systemd_exec_escape(word))
}

/// The inside of a double-quoted Exec*= word (see [`systemd_exec_word`]).
fn systemd_exec_escape(text: &str) -> String {
    systemd_env_escape(text).replace('$', "$$")
}

/// The inside of a double-quoted `Environment=` assignment: `\` and `"`
/// escaped, `%` doubled; `$` means nothing there (systemd.exec(5)).
fn systemd_env_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
}

/// A double-quoted nginx string. nginx expands `$name` in `root` and has no
/// escape for `$`, so a path holding one is refused.
fn nginx_string(path: &str) -> Result<String> {
    if path.contains('$') {
        return Err(Error::usage(format!(
            "{path} holds a `$`, which nginx would read as a variable in `root`"
        ))
        .hint("use a deploy_to without `$`, or write the nginx `root` line by hand"));
    }
    Ok(format!(
        "\"{}\"",
        path.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_template_documents_every_key_and_parses() {
        let values = Values::fresh("shop").unwrap();
        let text = config(&values);
        for (table, keys) in crate::config::SCHEMA {
            for key in *keys {
                let full = if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                };
                let as_key = format!("{key} =");
                let as_table = format!("[{key}]");
                let inline = table.contains('.') && text.contains(&format!("{key} = "));
                assert!(
                    text.contains(&as_key) || text.contains(&as_table) || inline,
                    "the config template does not document {full}"
                );
            }
        }
        let parsed = crate::config::parse(&text, Path::new("/etc/shop/shipit.toml")).unwrap();
        assert_eq!(parsed.deploy_to, PathBuf::from("/srv/shop"));
    }

    #[test]
    fn values_come_from_the_config() {
        let text = "deploy_to = \"/srv/shop\"\n[source]\ngit = \"/g\"\n[health]\nurl = \"http://127.0.0.1:4100/up?x=1\"\n";
        let config = crate::config::parse(text, Path::new("/etc/shipit.toml")).unwrap();
        let v = Values::from_config(&config, None, None).unwrap();
        assert_eq!((v.app.as_str(), v.port), ("shop", 4100));
        assert_eq!(v.health_path(), "/up");
        assert!(Values::from_config(&config, Some("../x"), None).is_err());
        assert_eq!(v.listen, 80, "health.url on the app's port: nginx keeps 80");
        // health.url through the front, the app on its own port.
        let v = Values::from_config(&config, None, Some(3000)).unwrap();
        assert_eq!((v.port, v.listen), (3000, 4100));
        let site = render(Template::Nginx, &v, Path::new("/etc/shipit.toml")).unwrap();
        assert!(site.contains("server 127.0.0.1:3000;"), "{site}");
        assert!(site.contains("listen 4100;"), "{site}");
        let pm2 = render(Template::Pm2, &v, Path::new("/etc/shipit.toml")).unwrap();
        assert!(pm2.contains("\"3000\""), "{pm2}");
    }

    /// The first `@NAME@` placeholder left in `text` (nginx's own `@app`
    /// named location is not one: it has no closing `@`).
    fn placeholder(text: &str) -> Option<&str> {
        text.match_indices('@').find_map(|(i, _)| {
            let rest = &text[i + 1..];
            let end =
                rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))?;
            (end > 0 && rest[end..].starts_with('@')).then(|| &rest[..end])
        })
    }

    /// The reload hook every template and the docs print for pm2.
    pub const PM2_RELOAD: &str = r#"reload = "cd \"$SHIPIT_DEPLOY_TO\" && pm2 startOrReload shared/ecosystem.config.js --update-env >/dev/null""#;

    #[test]
    fn every_place_that_suggests_a_pm2_reload_hook_suggests_the_same_one() {
        let values = Values::fresh("shop").unwrap();
        let file = Path::new("/etc/shop/shipit.toml");
        let texts = [
            ("shipit.toml", config(&values)),
            ("pm2", render(Template::Pm2, &values, file).unwrap()),
            ("README.md", include_str!("../README.md").to_string()),
            (
                "docs/configuration.md",
                include_str!("../docs/configuration.md").to_string(),
            ),
        ];
        for (name, text) in &texts {
            assert!(
                text.contains(PM2_RELOAD),
                "{name} does not suggest {PM2_RELOAD}"
            );
            for line in text.lines().filter(|l| l.contains("pm2 ")) {
                let hook = line.trim_start_matches(['#', '/', ' ']);
                if hook.starts_with("reload =") {
                    assert!(
                        hook.starts_with(PM2_RELOAD),
                        "{name} suggests another pm2 reload hook: {line}"
                    );
                }
            }
        }
    }

    /// `host:port` of each `server` line of an nginx upstream.
    fn upstream_servers(text: &str) -> Vec<&str> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.ends_with(';'))
            .filter_map(|l| l.strip_prefix("server "))
            .filter_map(|l| l.split([' ', ';']).next())
            .collect()
    }

    #[test]
    fn the_nginx_site_fronts_the_address_the_process_templates_listen_on() {
        let text = "deploy_to = \"/srv/shop\"\n[source]\ngit = \"/g\"\n[health]\nurl = \"http://127.0.0.1:4100/up\"\n";
        let config = crate::config::parse(text, Path::new("/etc/shipit.toml")).unwrap();
        let values = Values::from_config(&config, None, None).unwrap();
        let file = Path::new("/etc/shop/shipit.toml");
        let nginx = render(Template::Nginx, &values, file).unwrap();
        assert_eq!(upstream_servers(&nginx), ["127.0.0.1:4100"]);
        let pm2 = render(Template::Pm2, &values, file).unwrap();
        assert!(pm2.contains(r#"PORT: "4100""#), "{pm2}");
        let socket = render(Template::SystemdSocket, &values, file).unwrap();
        assert!(socket.contains("ListenStream=127.0.0.1:4100"), "{socket}");
        let slots = render(Template::NginxSlots, &values, file).unwrap();
        assert_eq!(
            upstream_servers(&slots),
            [r#""unix:/srv/shop/run/app.sock""#]
        );
    }

    #[test]
    fn a_unit_that_would_run_as_root_is_warned_about() {
        let mut values = Values::fresh("shop").unwrap();
        values.user = "root".into();
        let warning = root_user_warning(Template::Systemd, &values).unwrap();
        assert!(
            warning.contains("shop.service runs the app as root"),
            "{warning}"
        );
        assert!(
            warning.contains("useradd --system --no-create-home shop"),
            "{warning}"
        );
        assert!(root_user_warning(Template::SystemdSlots, &values).is_some());
        assert_eq!(root_user_warning(Template::Pm2, &values), None);
        values.user = "deploy".into();
        assert_eq!(root_user_warning(Template::Systemd, &values), None);
    }

    #[test]
    fn values_are_escaped_for_their_format() {
        assert_eq!(
            systemd_exec_word(r#"/srv/a b/"q"\$HOME%n"#),
            r#""/srv/a b/\"q\"\\$$HOME%%n""#
        );
        assert_eq!(systemd_path("/srv/a b/100%"), "/srv/a b/100%%");
        assert_eq!(
            nginx_string(r#"/srv/a b/"x""#).unwrap(),
            r#""/srv/a b/\"x\"""#
        );
        assert!(nginx_string("/srv/$x").is_err());
    }

    #[test]
    fn every_placeholder_is_filled() {
        assert_eq!(placeholder("x @APP@ y"), Some("APP"));
        assert_eq!(placeholder("try_files $uri @app;"), None);
        let values = Values::fresh("shop").unwrap();
        for t in Template::EACH {
            let text = render(t, &values, Path::new("/etc/shop/shipit.toml")).unwrap();
            assert_eq!(
                placeholder(&text),
                None,
                "{t:?} left a placeholder:\n{text}"
            );
        }
        assert_eq!(placeholder(&config(&values)), None);
    }
}
