"""A minimal faust app run as a process by the smoke test: it appends every value it receives to a
file, proving faust consumes from the real broker."""

import os

import faust

app = faust.App(
    os.environ["PROBE_GROUP"],
    broker=f"kafka://{os.environ['PROBE_BOOTSTRAP']}",
    value_serializer="raw",
    store="memory://",
    web_enabled=False,
    topic_disable_leader=True,
    consumer_auto_offset_reset="earliest",
    datadir=os.environ["PROBE_DATADIR"],
)
topic = app.topic(os.environ["PROBE_TOPIC"], value_type=bytes)


@app.agent(topic)
async def record(stream):
    async for value in stream:
        with open(os.environ["PROBE_OUT"], "ab") as out:
            out.write(value + b"\n")


if __name__ == "__main__":
    app.main()
