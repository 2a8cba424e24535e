//! Images and records survive the trip through their wire form unchanged.

use std::collections::BTreeMap;

use tributary_metadata::controller::{NewTopic, plan_create_topic, plan_elections};
use tributary_metadata::{BrokerState, MetadataImage, MetadataRecord, RecordResult};
use tributary_proto::coordinator::v1 as wire;
use uuid::Uuid;

#[test]
fn images_and_records_round_trip() {
    let mut image = MetadataImage::default();
    let mut records = vec![
        MetadataRecord::Bootstrap {
            cluster_id: "c".into(),
        },
        MetadataRecord::BecomeController {
            node_id: 101,
            term: 3,
        },
    ];
    for id in 1..=3 {
        records.push(MetadataRecord::RegisterBroker {
            id,
            incarnation: Uuid::from_u128(id as u128),
            listeners: BTreeMap::from([("PLAINTEXT".to_owned(), format!("h:{id}"))]),
            rack: (id == 2).then(|| "r2".to_owned()),
        });
    }
    let mut offset = 0;
    for record in &records {
        offset += 1;
        image.apply(offset, record).unwrap();
    }
    for id in 1..=3 {
        let epoch = image.brokers[&id].epoch;
        let record = MetadataRecord::SetBrokerState {
            id,
            epoch,
            state: BrokerState::Running,
        };
        offset += 1;
        image.apply(offset, &record).unwrap();
        records.push(record);
    }
    let request = NewTopic {
        name: "t".into(),
        partitions: 3,
        replication_factor: 2,
        configs: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
    };
    let create = plan_create_topic(&image, &request, Uuid::from_u128(99), 5).unwrap();
    offset += 1;
    image.apply(offset, &create).unwrap();
    records.push(create);
    let epoch = image.brokers[&1].epoch;
    let fence = MetadataRecord::SetBrokerState {
        id: 1,
        epoch,
        state: BrokerState::Fenced,
    };
    offset += 1;
    image.apply(offset, &fence).unwrap();
    records.push(fence);
    for change in plan_elections(&image) {
        let record = MetadataRecord::ChangePartition(change);
        offset += 1;
        assert!(matches!(
            image.apply(offset, &record).unwrap(),
            RecordResult::Partition(_)
        ));
        records.push(record);
    }
    records.push(MetadataRecord::AllocateProducerIds {
        broker_id: 2,
        broker_epoch: 9,
        count: 10,
    });
    records.push(MetadataRecord::DeleteTopic {
        id: Uuid::from_u128(99),
    });

    for record in &records {
        let on_wire = wire::MetadataRecord::from(record);
        assert_eq!(&MetadataRecord::try_from(&on_wire).unwrap(), record);
    }
    let on_wire = wire::MetadataImage::from(&image);
    assert_eq!(MetadataImage::try_from(&on_wire).unwrap(), image);
}

#[test]
fn malformed_wire_values_are_refused() {
    let mut bad = wire::MetadataRecord::from(&MetadataRecord::DeleteTopic { id: Uuid::nil() });
    if let Some(wire::metadata_record::Record::DeleteTopic(d)) = bad.record.as_mut() {
        d.id = vec![1, 2, 3].into();
    }
    let err = MetadataRecord::try_from(&bad).unwrap_err();
    assert!(err.message.contains("16 bytes"), "{err}");
    assert!(MetadataRecord::try_from(&wire::MetadataRecord { record: None }).is_err());
    let image = wire::MetadataImage {
        format_version: 99,
        ..Default::default()
    };
    assert!(MetadataImage::try_from(&image).is_err());
}
