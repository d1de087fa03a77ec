//! A small EC2 layer in front of moto: it answers the calls moto lacks (capacity reservations,
//! placement groups) from the EC2 API reference, injects errors on request, records every call,
//! and forwards everything else to moto unchanged.
//!
//! HTTP/1.1 only as far as aws-sdk-ec2 needs it: `Content-Length` request bodies, keep-alive,
//! `Expect: 100-continue`. Only loopback addresses are ever connected to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One call the SDK made.
#[derive(Debug, Clone)]
pub struct Call {
    /// `Action=` of the request.
    pub action: String,
    /// Region from the request's signature scope.
    pub region: String,
    /// Every form parameter.
    pub params: BTreeMap<String, String>,
}

/// A capacity reservation held by the emulator.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// `cr-…`.
    pub id: String,
    /// The region it was made in.
    pub region: String,
    /// Its availability zone.
    pub zone: String,
    /// The instance type it holds capacity for.
    pub instance_type: String,
    /// `InstancePlatform` (`Linux/UNIX`, …).
    pub platform: String,
    /// How many instances it holds.
    pub count: u32,
    /// `active` until cancelled, then `cancelled`.
    pub state: String,
    /// The end date, if the request gave one.
    pub end_date: Option<String>,
    /// `unlimited` or `limited`.
    pub end_date_type: String,
    /// `open` or `targeted`.
    pub match_criteria: String,
    /// Tags given at creation, as (key, value).
    pub tags: Vec<(String, String)>,
}

/// A placement group held by the emulator.
#[derive(Debug, Clone)]
pub struct PlacementGroup {
    /// `pg-…`.
    pub id: String,
    /// The region it was made in.
    pub region: String,
    /// Its name (unique in its region).
    pub name: String,
    /// `cluster`, `spread` or `partition`.
    pub strategy: String,
    /// Tags given at creation, as (key, value).
    pub tags: Vec<(String, String)>,
}

/// What the emulator holds and what the test asked it to do.
#[derive(Debug)]
pub struct State {
    /// Capacity reservations made so far, cancelled ones included.
    pub reservations: Vec<Reservation>,
    /// Placement groups that exist.
    pub groups: Vec<PlacementGroup>,
    tokens: HashMap<String, String>,
    /// (zone, instance type) without capacity, for reservations and on-demand and spot launches.
    pub no_capacity: HashSet<(String, String)>,
    /// Spot launches of these instance types fail with `InsufficientInstanceCapacity` anywhere.
    pub no_spot_capacity: HashSet<String>,
    /// Action → (code, message, status): every call of that action fails so.
    pub failures: HashMap<String, (String, String, u16)>,
    /// Items per page of DescribeCapacityReservations / DescribePlacementGroups without MaxResults.
    pub page_size: usize,
    /// Every call, in order.
    pub calls: Vec<Call>,
    /// Actions whose answer is withheld after the call was carried out: the caller never learns
    /// what it made (a crash inside a create looks like this).
    pub hold_after: HashSet<String>,
    /// Held actions so far, in order.
    pub held: Vec<String>,
    next: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            reservations: Vec::new(),
            groups: Vec::new(),
            tokens: HashMap::new(),
            no_capacity: HashSet::new(),
            no_spot_capacity: HashSet::new(),
            failures: HashMap::new(),
            page_size: 1000,
            calls: Vec::new(),
            hold_after: HashSet::new(),
            held: Vec::new(),
            next: 1,
        }
    }
}

impl State {
    /// Calls of one action, in order.
    pub fn calls_of(&self, action: &str) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| c.action == action)
            .cloned()
            .collect()
    }
}

/// The running layer; it stops listening when dropped.
pub struct Ec2Proxy {
    addr: SocketAddr,
    /// What it holds and was told to do (shared with a probe that must look from another task).
    pub state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Ec2Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Ec2Proxy {
    /// Listens on a free loopback port and forwards to moto at `moto`.
    pub(crate) async fn start(moto: SocketAddr) -> Ec2Proxy {
        assert!(
            moto.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, moto, st).await;
                });
            }
        });
        Ec2Proxy { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Response {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(
    mut sock: TcpStream,
    moto: SocketAddr,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("/").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            sock.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let total = head_end + 4 + len;
        while buf.len() < total {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = buf[head_end + 4..total].to_vec();
        buf.drain(..total);
        let req = Request {
            method,
            target,
            headers,
            body,
        };
        let action = parse_form(&req.body)
            .get("Action")
            .cloned()
            .unwrap_or_default();
        let resp = handle(req, moto, &state).await;
        let hold = {
            let mut st = state.lock().unwrap();
            let hold = st.hold_after.contains(&action);
            if hold {
                st.held.push(action);
            }
            hold
        };
        if hold {
            // Done, but never answered: the connection stays open until the caller goes.
            let mut sink = [0u8; 1024];
            while sock.read(&mut sink).await.unwrap_or(0) > 0 {}
            return Ok(());
        }
        let reason = match resp.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
            resp.status,
            resp.content_type,
            resp.body.len()
        )
        .into_bytes();
        out.extend_from_slice(&resp.body);
        sock.write_all(&out).await?;
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn region_of(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').nth(2))
        .unwrap_or("us-east-1")
        .to_string()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn error(status: u16, code: &str, message: &str) -> Response {
    Response {
        status,
        content_type: "text/xml;charset=UTF-8".into(),
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>",
            esc(code),
            esc(message)
        )
        .into_bytes(),
    }
}

fn ok(action: &str, inner: &str) -> Response {
    Response {
        status: 200,
        content_type: "text/xml;charset=UTF-8".into(),
        body: format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>00000000-0000-0000-0000-000000000000</requestId>{inner}</{action}Response>"
        )
        .into_bytes(),
    }
}

/// Tags of one resource type from `TagSpecification.N.Tag.M.Key/Value` (the SDK's spelling) or
/// `TagSpecifications.N.Tags.M.Key/Value` (the spelling of some EC2 examples).
fn tags_for(params: &BTreeMap<String, String>, resource_type: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for spec in ["TagSpecification", "TagSpecifications"] {
        for n in 1..=20 {
            let rt = params.get(&format!("{spec}.{n}.ResourceType"));
            if rt.is_none() {
                continue;
            }
            if rt.map(String::as_str) != Some(resource_type) {
                continue;
            }
            for tag in ["Tag", "Tags"] {
                for m in 1..=50 {
                    if let Some(k) = params.get(&format!("{spec}.{n}.{tag}.{m}.Key")) {
                        let v = params
                            .get(&format!("{spec}.{n}.{tag}.{m}.Value"))
                            .cloned()
                            .unwrap_or_default();
                        out.push((k.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// `Filter.N.Name` → values.
fn filters(params: &BTreeMap<String, String>) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for n in 1..=20 {
        let Some(name) = params.get(&format!("Filter.{n}.Name")) else {
            continue;
        };
        let values = (1..=50)
            .filter_map(|m| params.get(&format!("Filter.{n}.Value.{m}")).cloned())
            .collect();
        out.push((name.clone(), values));
    }
    out
}

fn list(params: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    (1..=100)
        .filter_map(|m| params.get(&format!("{prefix}.{m}")).cloned())
        .collect()
}

fn tag_matches(tags: &[(String, String)], name: &str, values: &[String]) -> Option<bool> {
    if name == "tag-key" {
        return Some(tags.iter().any(|(k, _)| values.contains(k)));
    }
    let key = name.strip_prefix("tag:")?;
    Some(tags.iter().any(|(k, v)| k == key && values.contains(v)))
}

fn tag_set(tags: &[(String, String)]) -> String {
    let items: String = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "<item><key>{}</key><value>{}</value></item>",
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!("<tagSet>{items}</tagSet>")
}

fn reservation_xml(r: &Reservation) -> String {
    format!(
        "<capacityReservationId>{id}</capacityReservationId><ownerId>123456789012</ownerId>\
         <capacityReservationArn>arn:aws:ec2:{region}:123456789012:capacity-reservation/{id}</capacityReservationArn>\
         <availabilityZone>{zone}</availabilityZone><instanceType>{t}</instanceType>\
         <instancePlatform>{p}</instancePlatform><tenancy>default</tenancy>\
         <totalInstanceCount>{n}</totalInstanceCount><availableInstanceCount>{n}</availableInstanceCount>\
         <ebsOptimized>false</ebsOptimized><ephemeralStorage>false</ephemeralStorage><state>{state}</state>\
         <startDate>2026-01-01T00:00:00.000Z</startDate>{end}<endDateType>{edt}</endDateType>\
         <instanceMatchCriteria>{mc}</instanceMatchCriteria><createDate>2026-01-01T00:00:00.000Z</createDate>{tags}",
        id = esc(&r.id),
        region = esc(&r.region),
        zone = esc(&r.zone),
        t = esc(&r.instance_type),
        p = esc(&r.platform),
        n = r.count,
        state = esc(&r.state),
        end = r
            .end_date
            .as_ref()
            .map(|e| format!("<endDate>{}</endDate>", esc(e)))
            .unwrap_or_default(),
        edt = esc(&r.end_date_type),
        mc = esc(&r.match_criteria),
        tags = tag_set(&r.tags),
    )
}

fn group_xml(g: &PlacementGroup) -> String {
    format!(
        "<groupName>{}</groupName><groupId>{}</groupId><strategy>{}</strategy><state>available</state>\
         <groupArn>arn:aws:ec2:{}:123456789012:placement-group/{}</groupArn>{}",
        esc(&g.name),
        esc(&g.id),
        esc(&g.strategy),
        esc(&g.region),
        esc(&g.name),
        tag_set(&g.tags)
    )
}

fn page<T: Clone>(
    items: Vec<T>,
    params: &BTreeMap<String, String>,
    default_size: usize,
) -> (Vec<T>, Option<String>) {
    let size = params
        .get("MaxResults")
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_size)
        .max(1);
    let start: usize = params
        .get("NextToken")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (
        items.get(start..end).map(<[T]>::to_vec).unwrap_or_default(),
        next,
    )
}

async fn handle(req: Request, moto: SocketAddr, state: &Arc<Mutex<State>>) -> Response {
    let params = parse_form(&req.body);
    let action = params.get("Action").cloned().unwrap_or_default();
    let region = region_of(&req.headers);
    {
        let mut st = state.lock().unwrap();
        st.calls.push(Call {
            action: action.clone(),
            region: region.clone(),
            params: params.clone(),
        });
        if let Some((code, message, status)) = st.failures.get(&action) {
            return error(*status, code, message);
        }
        if action == "RunInstances" {
            let t = params.get("InstanceType").cloned().unwrap_or_default();
            let zone = params
                .get("Placement.AvailabilityZone")
                .cloned()
                .unwrap_or_default();
            let spot = params
                .get("InstanceMarketOptions.MarketType")
                .is_some_and(|m| m == "spot");
            if st.no_capacity.contains(&(zone.clone(), t.clone()))
                || (spot && st.no_spot_capacity.contains(&t))
            {
                return error(
                    500,
                    "InsufficientInstanceCapacity",
                    &format!(
                        "We currently do not have sufficient {t} capacity in the Availability Zone you requested ({zone})."
                    ),
                );
            }
            // moto knows no placement groups: the layer checks the ones it holds.
            if let Some(g) = params.get("Placement.GroupName")
                && !st
                    .groups
                    .iter()
                    .any(|pg| &pg.name == g && pg.region == region)
            {
                return error(
                    400,
                    "InvalidPlacementGroup.Unknown",
                    &format!("The Placement Group '{g}' is unknown."),
                );
            }
            if let Some(cr) = params.get(
                "CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId",
            ) {
                // A reservation belongs to its region: another region's id is unknown here.
                let Some(r) = st
                    .reservations
                    .iter()
                    .find(|r| &r.id == cr && r.region == region)
                else {
                    return error(
                        400,
                        "InvalidCapacityReservationId.NotFound",
                        &format!("{cr} does not exist"),
                    );
                };
                if r.state != "active"
                    || r.instance_type != t
                    || (!zone.is_empty() && r.zone != zone)
                {
                    return error(
                        400,
                        "InvalidParameterCombination",
                        &format!(
                            "{cr} ({}, {}, {}) cannot take a {t} in {zone}",
                            r.state, r.instance_type, r.zone
                        ),
                    );
                }
            }
        }
    }
    match action.as_str() {
        "CreateCapacityReservation" => create_reservation(&params, &region, state),
        "DescribeCapacityReservations" => {
            let st = state.lock().unwrap();
            let ids = list(&params, "CapacityReservationId");
            let fs = filters(&params);
            let items: Vec<Reservation> = st
                .reservations
                .iter()
                .filter(|r| r.region == region)
                .filter(|r| ids.is_empty() || ids.contains(&r.id))
                .filter(|r| {
                    fs.iter().all(|(name, values)| match name.as_str() {
                        "state" => values.contains(&r.state),
                        "instance-type" => values.contains(&r.instance_type),
                        "availability-zone" => values.contains(&r.zone),
                        n => tag_matches(&r.tags, n, values).unwrap_or(true),
                    })
                })
                .cloned()
                .collect();
            let (items, next) = page(items, &params, st.page_size);
            let body: String = items
                .iter()
                .map(|r| format!("<item>{}</item>", reservation_xml(r)))
                .collect();
            let next = next
                .map(|t| format!("<nextToken>{t}</nextToken>"))
                .unwrap_or_default();
            ok(
                &action,
                &format!("<capacityReservationSet>{body}</capacityReservationSet>{next}"),
            )
        }
        "CancelCapacityReservation" => {
            let id = params
                .get("CapacityReservationId")
                .cloned()
                .unwrap_or_default();
            let mut st = state.lock().unwrap();
            match st
                .reservations
                .iter_mut()
                .find(|r| r.id == id && r.region == region)
            {
                Some(r) => {
                    r.state = "cancelled".into();
                    ok(&action, "<return>true</return>")
                }
                None => error(
                    400,
                    "InvalidCapacityReservationId.NotFound",
                    &format!("The capacity reservation '{id}' does not exist"),
                ),
            }
        }
        "ModifyCapacityReservation" => {
            let id = params
                .get("CapacityReservationId")
                .cloned()
                .unwrap_or_default();
            let mut st = state.lock().unwrap();
            match st
                .reservations
                .iter_mut()
                .find(|r| r.id == id && r.region == region)
            {
                Some(r) if r.state == "active" => {
                    if let Some(t) = params.get("EndDateType") {
                        r.end_date_type = t.clone();
                    }
                    if let Some(e) = params.get("EndDate") {
                        r.end_date = Some(e.clone());
                    }
                    if let Some(n) = params.get("InstanceCount").and_then(|n| n.parse().ok()) {
                        r.count = n;
                    }
                    ok(&action, "<return>true</return>")
                }
                Some(r) => error(400, "IncorrectState", &format!("{id} is {}", r.state)),
                None => error(
                    400,
                    "InvalidCapacityReservationId.NotFound",
                    &format!("The capacity reservation '{id}' does not exist"),
                ),
            }
        }
        "CreatePlacementGroup" => {
            let mut st = state.lock().unwrap();
            let name = params.get("GroupName").cloned().unwrap_or_default();
            if st
                .groups
                .iter()
                .any(|g| g.name == name && g.region == region)
            {
                return error(
                    400,
                    "InvalidPlacementGroup.Duplicate",
                    &format!("The placement group '{name}' already exists."),
                );
            }
            let strategy = params
                .get("Strategy")
                .cloned()
                .unwrap_or_else(|| "cluster".into());
            if !["cluster", "spread", "partition"].contains(&strategy.as_str()) {
                return error(
                    400,
                    "InvalidParameterValue",
                    &format!("invalid strategy {strategy}"),
                );
            }
            st.next += 1;
            let g = PlacementGroup {
                id: format!("pg-{:017x}", st.next),
                region: region.clone(),
                name,
                strategy,
                tags: tags_for(&params, "placement-group"),
            };
            let xml = group_xml(&g);
            st.groups.push(g);
            ok(&action, &format!("<placementGroup>{xml}</placementGroup>"))
        }
        "DescribePlacementGroups" => {
            let st = state.lock().unwrap();
            let names = list(&params, "GroupName");
            let ids = list(&params, "GroupId");
            let fs = filters(&params);
            let mut missing = names.iter().filter(|n| {
                !st.groups
                    .iter()
                    .any(|g| &&g.name == n && g.region == region)
            });
            if let Some(n) = missing.next() {
                return error(
                    400,
                    "InvalidPlacementGroup.Unknown",
                    &format!("The Placement Group '{n}' is unknown."),
                );
            }
            let items: String = st
                .groups
                .iter()
                .filter(|g| g.region == region)
                .filter(|g| names.is_empty() || names.contains(&g.name))
                .filter(|g| ids.is_empty() || ids.contains(&g.id))
                .filter(|g| {
                    fs.iter().all(|(name, values)| match name.as_str() {
                        "group-name" => values.contains(&g.name),
                        "strategy" => values.contains(&g.strategy),
                        n => tag_matches(&g.tags, n, values).unwrap_or(true),
                    })
                })
                .map(|g| format!("<item>{}</item>", group_xml(g)))
                .collect();
            ok(
                &action,
                &format!("<placementGroupSet>{items}</placementGroupSet>"),
            )
        }
        "DeletePlacementGroup" => {
            let mut st = state.lock().unwrap();
            let name = params.get("GroupName").cloned().unwrap_or_default();
            let before = st.groups.len();
            st.groups
                .retain(|g| !(g.name == name && g.region == region));
            if st.groups.len() == before {
                return error(
                    400,
                    "InvalidPlacementGroup.Unknown",
                    &format!("The Placement Group '{name}' is unknown."),
                );
            }
            ok(&action, "<return>true</return>")
        }
        _ => forward(&req, moto).await,
    }
}

fn create_reservation(
    params: &BTreeMap<String, String>,
    region: &str,
    state: &Arc<Mutex<State>>,
) -> Response {
    let mut st = state.lock().unwrap();
    let token = params.get("ClientToken").cloned();
    if let Some(id) = token.as_ref().and_then(|t| st.tokens.get(t)).cloned() {
        let r = st
            .reservations
            .iter()
            .find(|r| r.id == id)
            .cloned()
            .expect("token maps to a reservation");
        return ok(
            "CreateCapacityReservation",
            &format!(
                "<capacityReservation>{}</capacityReservation>",
                reservation_xml(&r)
            ),
        );
    }
    let zone = params.get("AvailabilityZone").cloned().unwrap_or_default();
    let t = params.get("InstanceType").cloned().unwrap_or_default();
    let count: u32 = match params.get("InstanceCount").and_then(|v| v.parse().ok()) {
        Some(n) if n > 0 => n,
        _ => {
            return error(
                400,
                "InvalidParameterValue",
                "InstanceCount must be a positive integer",
            );
        }
    };
    if zone.is_empty() || t.is_empty() || !params.contains_key("InstancePlatform") {
        return error(
            400,
            "MissingParameter",
            "AvailabilityZone, InstanceType and InstancePlatform are required",
        );
    }
    if st.no_capacity.contains(&(zone.clone(), t.clone())) {
        return error(
            500,
            "InsufficientInstanceCapacity",
            &format!("Insufficient capacity for {t} in {zone}."),
        );
    }
    let end_date_type = params
        .get("EndDateType")
        .cloned()
        .unwrap_or_else(|| "unlimited".into());
    let end_date = params.get("EndDate").cloned();
    if end_date_type == "limited" && end_date.is_none() {
        return error(
            400,
            "InvalidParameterCombination",
            "EndDate is required when EndDateType is limited",
        );
    }
    st.next += 1;
    let r = Reservation {
        id: format!("cr-{:017x}", st.next),
        region: region.to_string(),
        zone,
        instance_type: t,
        platform: params.get("InstancePlatform").cloned().unwrap_or_default(),
        count,
        state: "active".into(),
        end_date,
        end_date_type,
        match_criteria: params
            .get("InstanceMatchCriteria")
            .cloned()
            .unwrap_or_else(|| "open".into()),
        tags: tags_for(params, "capacity-reservation"),
    };
    if let Some(t) = token {
        st.tokens.insert(t, r.id.clone());
    }
    let xml = reservation_xml(&r);
    st.reservations.push(r);
    ok(
        "CreateCapacityReservation",
        &format!("<capacityReservation>{xml}</capacityReservation>"),
    )
}

async fn forward(req: &Request, moto: SocketAddr) -> Response {
    match forward_io(req, moto).await {
        Ok(r) => r,
        Err(e) => error(
            503,
            "ServiceUnavailable",
            &format!("proxy could not reach moto: {e}"),
        ),
    }
}

async fn forward_io(req: &Request, moto: SocketAddr) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(moto).await?;
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.headers {
        let lk = k.to_ascii_lowercase();
        if [
            "connection",
            "content-length",
            "expect",
            "transfer-encoding",
            "keep-alive",
        ]
        .contains(&lk.as_str())
        {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&req.body);
    s.write_all(&bytes).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let head_end =
        find(&resp, b"\r\n\r\n").ok_or_else(|| std::io::Error::other("moto sent no header end"))?;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut content_type = "text/xml".to_string();
    let mut len: Option<usize> = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_string();
            } else if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok();
            }
        }
    }
    let rest = &resp[head_end + 4..];
    let body = match len {
        Some(n) => rest[..n.min(rest.len())].to_vec(),
        None => rest.to_vec(),
    };
    Ok(Response {
        status,
        content_type,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tag_spellings_are_read() {
        let p: BTreeMap<String, String> = [
            ("TagSpecification.1.ResourceType", "capacity-reservation"),
            ("TagSpecification.1.Tag.1.Key", "a"),
            ("TagSpecification.1.Tag.1.Value", "1"),
            ("TagSpecifications.2.ResourceType", "capacity-reservation"),
            ("TagSpecifications.2.Tags.1.Key", "b"),
            ("TagSpecifications.2.Tags.1.Value", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            tags_for(&p, "capacity-reservation"),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert!(tags_for(&p, "instance").is_empty());
    }
}
