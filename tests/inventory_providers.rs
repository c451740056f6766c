//! The inventory against providers: moto's EC2 emulator and the Linode stand-in. A design
//! that moves its host to another region or datacenter makes the redeploy remove the
//! recorded instance where it is (never leaving it behind), `destroy` works from the record
//! once the design is gone, and `jarvis hosts --orphans` lists what carries jarvis's tags
//! but no record names.

mod support;

use std::process::Command;

use jarvis_standins::process::Standin;
use jarvis_testbed::Server;
use serde_json::Value;
use support::{Home, JARVIS, boto3};

/// One of moto's stock images, in every region.
const AMI: &str = "ami-03cf127a";

const EC2_PIPELINES: &str = "pipelines:
  ec2-deploy:
    command: deploy
    providers: [EC2]
    stages:
      - { task: \"ec2:deploy\", idempotent: true }
      - { task: \"ec2:wait\", idempotent: true, with: { poll_ms: 50 } }
  ec2-redeploy:
    command: redeploy
    providers: [EC2]
    stages:
      - { task: \"ec2:shutdown\", idempotent: true, with: { poll_ms: 50 } }
      - { task: \"ec2:delete\", idempotent: true, with: { poll_ms: 50 } }
      - { task: \"ec2:deploy\", idempotent: true }
      - { task: \"ec2:wait\", idempotent: true, with: { poll_ms: 50 } }
  ec2-destroy:
    command: destroy
    providers: [EC2]
    stages:
      - { task: \"ec2:delete\", idempotent: true, with: { poll_ms: 50 } }
roles:
  grants:
    - { console: \"*\", roles: [admin] }
";

fn ec2_design(datacenter: &str) -> String {
    format!(
        "instance:\n  hostname: ec2m\n  fqdn: ec2m.example.com\n  provider: EC2\n  guestid: Debian 12\n  datacenter: {datacenter}\n  size: 512\n"
    )
}

/// The ids of the instances in `region` tagged for `host` that still exist.
fn alive(moto: &Server, region: &str, host: &str) -> Vec<String> {
    const LIST: &str = r#"
import json, os, boto3
ec2 = boto3.client("ec2", region_name=os.environ["REGION"], endpoint_url=os.environ["URL"])
out = []
for reservation in ec2.describe_instances()["Reservations"]:
    for i in reservation["Instances"]:
        tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        if i["State"]["Name"] != "terminated":
            out.append({"id": i["InstanceId"], "host": tags.get("jarvis:host")})
print(json.dumps(out))
"#;
    let listed: Vec<Value> =
        serde_json::from_str(&boto3(moto, region, LIST)).expect("the listing is JSON");
    listed
        .iter()
        .filter(|i| i["host"] == host)
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn an_ec2_host_moved_to_another_region_leaves_no_instance_behind_and_orphans_are_listed() {
    let Some(moto) = Server::start("moto").unwrap() else {
        return;
    };
    let config = format!(
        "workers:
  modules:
    ec2: {{ env: {{ AWS_ACCESS_KEY_ID: '{key}', AWS_SECRET_ACCESS_KEY: '{secret}', EC2_ENDPOINT: '{url}', EC2_IMAGES: 'Debian 12={AMI}', EC2_REGIONS: 'Lab=eu-west-1, Paris=eu-west-3' }} }}
{EC2_PIPELINES}",
        key = moto.get("MOTO_ACCESS_KEY_ID"),
        secret = moto.get("MOTO_SECRET_ACCESS_KEY"),
        url = moto.get("MOTO_URL"),
    );
    let home = Home::new(&config);
    home.design("ec2m", &ec2_design("Lab"));
    let mut sh = home.shell();
    sh.say("deploy ec2m");
    sh.expect("ec2m deploy #1 succeeded in");
    let first = alive(&moto, "eu-west-1", "ec2m");
    assert_eq!(first.len(), 1, "{first:?}");
    let host = sh.ask("host ec2m", "ec2m (");
    assert!(
        host.contains(&format!("ec2 {} (eu-west-1)", first[0])),
        "{host}"
    );

    // The design moves the host to Paris: the plan says what the redeploy will do, and the
    // redeploy removes the Lab instance where it is before making the new one.
    home.design("ec2m", &ec2_design("Paris"));
    sh.say("plan ec2m");
    let plan = sh.expect("is recorded");
    assert!(
        plan.contains("moves from Lab to Paris")
            && plan.contains(&format!(
                "ec2 {} (eu-west-1) is removed where it is",
                first[0]
            )),
        "{plan}"
    );
    sh.say("redeploy ec2m");
    sh.expect("ec2m redeploy #2 succeeded in");
    assert_eq!(alive(&moto, "eu-west-1", "ec2m"), Vec::<String>::new());
    let moved = alive(&moto, "eu-west-3", "ec2m");
    assert_eq!(moved.len(), 1, "{moved:?}");
    sh.finish();

    // An instance with jarvis's tags that no record holds is an orphan: listed, not touched.
    let ghost = boto3(
        &moto,
        "eu-west-1",
        &format!(
            r#"
import os, boto3
ec2 = boto3.client("ec2", region_name=os.environ["REGION"], endpoint_url=os.environ["URL"])
made = ec2.run_instances(ImageId="{AMI}", MinCount=1, MaxCount=1, TagSpecifications=[{{
    "ResourceType": "instance",
    "Tags": [{{"Key": "jarvis:host", "Value": "ghost"}}, {{"Key": "Name", "Value": "ghost"}}]}}])
print(made["Instances"][0]["InstanceId"])
"#
        ),
    );
    let out = Command::new(JARVIS)
        .args(["hosts", "--orphans", "--config"])
        .arg(home.config())
        .output()
        .expect("jarvis hosts runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "ec2 {ghost} in eu-west-1, tagged for ghost: no record holds it; to remove it: aws ec2 terminate-instances --region eu-west-1 --instance-ids {ghost}"
        )),
        "{text}"
    );
    assert!(
        !text.contains(&moved[0]),
        "the recorded instance is no orphan: {text}"
    );
    assert_eq!(alive(&moto, "eu-west-1", "ghost"), vec![ghost.clone()]);

    // Its design is gone: destroy still works, from the record, where the instance is.
    std::fs::remove_file(home.path("designs/ec2m.yaml")).unwrap();
    let mut sh = home.shell();
    // An admin asks the same in chat.
    let orphan = sh.ask("orphans", "tagged for ghost");
    assert!(
        orphan.contains(&format!("ec2 {ghost} in eu-west-1")),
        "{orphan}"
    );
    let queued = sh.ask("destroy ec2m", "destroy #3 of ec2m queued");
    assert!(
        queued.contains("the design as deployed is used"),
        "{queued}"
    );
    sh.expect("ec2m destroy #3 succeeded in");
    let gone = sh.ask("host ec2m", "ec2m (");
    assert!(gone.contains("destroyed"), "{gone}");
    sh.finish();
    assert_eq!(alive(&moto, "eu-west-3", "ec2m"), Vec::<String>::new());
}

const LINODE_TOKEN: &str = "standin-token";

fn linode_design(datacenter: &str) -> String {
    format!(
        "instance:\n  hostname: lin1\n  fqdn: lin1.example.com\n  provider: Linode\n  guestid: Debian 12\n  datacenter: {datacenter}\n  size: 2048\n"
    )
}

#[test]
fn a_linode_moved_to_another_datacenter_is_deleted_where_it_was() {
    let linode = Standin::spawn_named(
        "linode-standin",
        &[
            "--token",
            LINODE_TOKEN,
            "--provision-ms",
            "50",
            "--boot-ms",
            "50",
            "--shutdown-ms",
            "50",
        ],
    )
    .unwrap();
    let stages = |tasks: &[&str]| -> String {
        tasks
            .iter()
            .map(|t| {
                format!("      - {{ task: \"{t}\", idempotent: true, with: {{ poll_ms: 50 }} }}\n")
            })
            .collect()
    };
    // Both redeploy pipelines serve Linode, so a design may pick either by name; without a
    // `pipeline:` key it gets linode-move, the first by name.
    let config = format!(
        "workers:
  modules:
    linode: {{ env: {{ LINODE_TOKEN: '{LINODE_TOKEN}', LINODE_API: '{api}/v4' }} }}
pipelines:
  linode-deploy:
    command: deploy
    providers: [Linode]
    stages:
{deploy}  linode-move:
    command: redeploy
    providers: [Linode]
    stages:
{redeploy}  linode-rebuild:
    command: redeploy
    providers: [Linode]
    stages:
{rebuild}  linode-destroy:
    command: destroy
    providers: [Linode]
    stages:
{destroy}roles:
  grants:
    - {{ console: \"*\", roles: [admin] }}
",
        api = linode.url(),
        deploy = stages(&["linode:deploy", "linode:wait"]),
        redeploy = stages(&[
            "linode:shutdown",
            "linode:delete",
            "linode:deploy",
            "linode:wait"
        ]),
        rebuild = stages(&["linode:rebuild", "linode:wait"]),
        destroy = stages(&["linode:delete"]),
    );
    let home = Home::new(&config);
    home.design("lin1", &linode_design("Atlanta"));
    let mut sh = home.shell();
    sh.say("deploy lin1");
    sh.expect("lin1 deploy #1 succeeded in");
    let regions = || -> Vec<String> {
        linode
            .instances()
            .unwrap()
            .iter()
            .map(|i| i["region"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(regions(), ["us-southeast"]);

    // A pipeline that rebuilds in place cannot move the host: refused, with what to do.
    home.design(
        "lin1",
        &format!("{}pipeline: linode-rebuild\n", linode_design("Newark")),
    );
    let refused = sh.ask("redeploy lin1", "failed");
    assert!(
        refused.contains("lin1 is recorded in Atlanta and its design now says Newark, but the linode-rebuild pipeline does not delete linode")
            && refused.contains("say 'destroy lin1', then deploy it again"),
        "{refused}"
    );
    // One that deletes it moves it: exactly one instance, in Newark.
    home.design("lin1", &linode_design("Newark"));
    sh.say("redeploy lin1");
    sh.expect("lin1 redeploy #2 succeeded in");
    assert_eq!(regions(), ["us-east"]);
    sh.finish();

    std::fs::remove_file(home.path("designs/lin1.yaml")).unwrap();
    let mut sh = home.shell();
    sh.ask("destroy lin1", "destroy #3 of lin1 queued");
    sh.expect("lin1 destroy #3 succeeded in");
    sh.finish();
    assert_eq!(regions(), Vec::<String>::new());
}
