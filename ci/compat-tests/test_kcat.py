"""kcat (librdkafka's command-line client, from Debian) against the real broker."""

import subprocess


def kcat(broker, *args, stdin=None):
    result = subprocess.run(["kcat", "-b", broker.bootstrap, *args], input=stdin, capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_kcat_metadata_produce_consume(broker):
    from confluent_kafka.admin import AdminClient, NewTopic
    client = AdminClient({"bootstrap.servers": broker.bootstrap})
    client.create_topics([NewTopic("kcat-topic", 2, 1)])["kcat-topic"].result(timeout=30)
    listing = kcat(broker, "-L")
    assert "kcat-topic" in listing and "2 partitions" in listing
    lines = "".join(f"key{i}:line {i}\n" for i in range(100))
    kcat(broker, "-P", "-t", "kcat-topic", "-K", ":", "-z", "lz4", stdin=lines.encode())
    out = kcat(broker, "-C", "-t", "kcat-topic", "-o", "beginning", "-e", "-f", "%k=%s\n")
    got = sorted(out.strip().splitlines())
    assert got == sorted(f"key{i}=line {i}" for i in range(100))
