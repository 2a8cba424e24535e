//! The admin APIs (CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs, DescribeCluster) on the Kafka protocol: each is forwarded to the
//! coordinators through the service layer.
