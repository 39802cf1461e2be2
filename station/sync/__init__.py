"""kanjian.station.sync: outbox to the platform, MQTT transport, S3 images, platform deploys."""
