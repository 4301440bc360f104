//! Key metadata and its change notifications.

use std::time::Duration;

use weir_storage::{KeyMetadataRecord, MetadataChange, listen_metadata_changes};

use crate::support::{device, postgres};

fn pump_state() -> KeyMetadataRecord {
    KeyMetadataRecord {
        key: "modbus.pump.state".into(),
        data_type: "enum".into(),
        name: Some("Pump state".into()),
        unit: None,
        description: Some("Operating state of the feed pump".into()),
        value_map: vec![(0, "off".into()), (1, "on".into()), (2, "fault".into())],
        min: None,
        max: None,
    }
}

fn temperature() -> KeyMetadataRecord {
    KeyMetadataRecord {
        key: "ruuvi.c4f3a1b2.temperature".into(),
        data_type: "f32".into(),
        name: Some("Temperature".into()),
        unit: Some("Cel".into()),
        description: None,
        value_map: vec![],
        min: Some(-40.0),
        max: Some(85.0),
    }
}

async fn next_change(listener: &mut weir_storage::MetadataListener) -> MetadataChange {
    tokio::time::timeout(Duration::from_secs(10), listener.next_change())
        .await
        .expect("a change arrives in time")
        .expect("the listener is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_stored_and_read_back() {
    let (_server, storage) = postgres().await;
    let logger = device("logger-1");
    storage
        .put_metadata(&logger, &[temperature(), pump_state()])
        .await
        .unwrap();

    assert_eq!(
        storage.device_metadata(&logger).await.unwrap(),
        [pump_state(), temperature()]
    );

    let mut renamed = temperature();
    renamed.name = Some("Outdoor temperature".into());
    renamed.min = None;
    storage
        .put_metadata(&logger, &[renamed.clone()])
        .await
        .unwrap();
    assert_eq!(
        storage.device_metadata(&logger).await.unwrap(),
        [pump_state(), renamed]
    );
    assert!(
        storage
            .device_metadata(&device("other"))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_before_their_metadata_are_untyped() {
    let (_server, storage) = postgres().await;
    let logger = device("logger-1");
    let points = [crate::support::point(
        0,
        "k.untyped",
        crate::support::JUNE_2025,
        weir_storage::StoredValue::Int(1),
    )];
    storage
        .store_batch(&logger, "b1", &points, crate::support::receipt)
        .await
        .unwrap();
    assert!(storage.device_metadata(&logger).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_hear_of_metadata_changes() {
    let (server, storage) = postgres().await;
    let mut listener = listen_metadata_changes(&server.url()).await.unwrap();
    assert_eq!(next_change(&mut listener).await, MetadataChange::All);

    let logger = device("logger-1");
    storage
        .put_metadata(&logger, &[pump_state()])
        .await
        .unwrap();

    assert_eq!(
        next_change(&mut listener).await,
        MetadataChange::Device(logger)
    );
}
