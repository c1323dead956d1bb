//! Every option of SPEC section 3, declared once, by `--help` group: its doc
//! comment is its help, its default is the text a flag would carry (none for
//! an `Option` that stays unset), its kind says which texts it accepts. The
//! flag (`--web-port`), the variable (`BITSD_WEB_PORT`) and the file key
//! (`web_port`) all follow from the name.

use std::net::IpAddr;
use std::path::PathBuf;

use chrono_tz::Tz;

use super::values::{
    Allowlist, Lang, MqttUrl, SensorNames, address, addresses, db_uri, language, mode, mqtt_url,
    number, path, public_url, sensor_names, switch, text, timezone, topic,
};

super::layers::options! {
    "Web" {
        /// Address the HTTP/websocket server binds
        web_address: IpAddr = "0.0.0.0", address();
        /// Port of the HTTP/websocket server (0 = any free port)
        web_port: u16 = "8008", number(..);
        /// Unix socket path for HTTP/websocket instead of TCP
        web_usocket: Option<PathBuf>, path();
        /// Take the client address and scheme from X-Real-IP / X-Forwarded-For / X-Forwarded-Proto
        reverse_proxied: bool = "false", switch();
        /// This server's address as the world reaches it, e.g. https://bits.example.org:
        /// every absolute URL bitsd writes uses it [default: none, each request's Host]
        public_url: Option<String>, public_url();
        /// Most HTTP and websocket connections at once; past it new ones wait
        web_max_connections: u32 = "16384", number(1..).named("N");
        /// Most connections one client address (IPv4, or IPv6 /64) holds at once,
        /// websockets and SSE included
        web_max_connections_per_address: u32 = "1024", number(1..).named("N");
        /// Most long-lived connections at once (websockets, event streams, device
        /// websockets); past it a new one gets 503, while requests are still served
        web_max_streams: u32 = "8192", number(1..).named("N");
        /// How many reverse proxies stand in front (with reverse_proxied): the client
        /// is the address this many places from the right of X-Forwarded-For
        trusted_proxy_hops: u32 = "1", number(1..=16).named("N");
        /// Folder whose files replace the built-in ones of the same name under /static/
        /// [default: none, the built-in files only]
        assets_path: Option<PathBuf>, path();
        /// Folder of markdown pages read by bootstrap (and live in developer mode), each
        /// replacing the built-in page of the same name [default: none, the built-in pages only]
        wiki_path: Option<PathBuf>, path();
        /// Escape raw HTML in markdown pages
        mdescape: bool = "true", switch();
        /// Protocol version reported in /data
        jsonver: u32 = "3", number(..);
    }
    "Device" {
        /// Address the device (miniprotocol) listener binds
        control_local_address: IpAddr = "127.0.0.1", address();
        /// Port of the device listener (0 = any free port)
        control_local_port: u16 = "8888", number(..);
        /// Unix socket path for the device listener instead of TCP
        control_local_usocket: Option<PathBuf>, path();
        /// Who may connect as the device: comma-separated addresses or CIDR blocks
        control_remote_address: Allowlist = "127.0.0.1", addresses();
        /// When set, the device's first line must be `auth <token>`
        control_token: Option<String>, text().named("TOKEN");
        /// Seconds a device may stay silent before it is disconnected (0 = never)
        control_idle_timeout: u64 = "3600", number(..).named("SECONDS");
    }
    "Unix sockets" {
        /// Owner applied to unix sockets [default: unchanged]
        usocket_uid: Option<u32>, number(..).named("UID");
        /// Group applied to unix sockets [default: unchanged]
        usocket_gid: Option<u32>, number(..).named("GID");
        /// Mode applied to unix sockets, in octal
        usocket_mode: u32 = "0600", mode();
    }
    "Storage" {
        /// SQLite database file
        db: PathBuf = "bitsd.db", path();
        /// Synonym of --db written as an SQLAlchemy URI, `sqlite:///path`
        db_uri: Option<PathBuf>, db_uri();
        /// Log every SQL statement
        log_queries: bool = "false", switch();
    }
    "Members" {
        /// Key that signs cookies [default: generated once and kept in the database]
        cookie_secret: Option<String>, text().named("SECRET");
        /// Lifetime of the login cookie, in days
        cookie_max_age_days: u32 = "1", number(1..=3650);
        /// Seconds between two failed logins for the same user from the same address
        min_login_retry: u64 = "5", number(..);
        /// Token for POST /macupdate; while unset the endpoint answers 404
        mac_update_password: Option<String>, text().named("TOKEN");
        /// Minimum seconds between two MAC updates from one address
        mac_update_interval: u64 = "0", number(..);
    }
    "Presence" {
        /// Open/close the room from the presence roster
        auto_status: bool = "false", switch();
        /// Seconds the roster must stay non-empty before auto_status opens
        auto_open_after: u64 = "300", number(..);
        /// Seconds the roster must stay empty before auto_status closes
        auto_close_after: u64 = "900", number(..);
        /// Weeks of status history the forecast averages over
        forecast_weeks: u32 = "8", number(1..=520);
        /// Days of past openings in /openings.ics
        ical_past_days: u32 = "60", number(1..=3660).named("DAYS");
        /// Time zone for timestamps and the forecast, e.g. Europe/Rome [default: the system's]
        timezone: Option<Tz>, timezone();
    }
    "Pages" {
        /// Language of the pages for a client that asks for neither English nor Italian
        default_language: Lang = "en", language();
        /// Names of the temperature sensors, e.g. 0=Lab,1=Outside (in the file, a table
        /// such as {0 = "Lab", 1 = "Outside"}) [default: none, "Sensor N"]
        sensor_names: Option<SensorNames>, sensor_names();
    }
    "Integrations" {
        /// MQTT broker that bitsd keeps the state on, mqtt://[user:password@]host[:port]
        /// or mqtts://... [default: none, MQTT off]
        mqtt_url: Option<MqttUrl>, mqtt_url();
        /// First levels of every topic bitsd publishes and reads (with mqtt_url)
        mqtt_topic_prefix: String = "bits", topic();
        /// Publish Home Assistant discovery configs (with mqtt_url)
        mqtt_homeassistant: bool = "true", switch();
        /// First levels of the Home Assistant discovery topics
        mqtt_homeassistant_prefix: String = "homeassistant", topic();
        /// Take PREFIX/set/status, PREFIX/set/temperature/<sensor> and PREFIX/set/message
        /// as the device's own lines (with mqtt_url; restrict them with the broker's ACL)
        mqtt_subscribe: bool = "false", switch();
    }
    "Operation" {
        /// One access-log line per HTTP request
        log_requests: bool = "true", switch();
        /// Debug logging, pages and static files read from disk on every request, no caching
        developer_mode: bool = "false", switch();
    }
}

/// No sensor named.
static UNNAMED: SensorNames = SensorNames(std::collections::BTreeMap::new());

impl Options {
    /// The sensors' names; none when `sensor_names` is unset.
    pub fn sensor_names(&self) -> &SensorNames {
        self.sensor_names.as_ref().unwrap_or(&UNNAMED)
    }
}
