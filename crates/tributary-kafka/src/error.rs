//! Kafka's error codes, with Kafka's names and numbers (`org.apache.kafka.common.protocol.Errors`).
//!
//! The numbers are the wire values of every protocol Tributary speaks: the gRPC API's
//! `tributary.common.v1.ErrorCode` has the same numbers, so converting is by number.

/// One of Kafka's error codes. `None` is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i16)]
pub enum ErrorCode {
    /// `NONE`.
    None = 0,
    /// `UNKNOWN_SERVER_ERROR`.
    UnknownServerError = -1,
    /// `OFFSET_OUT_OF_RANGE`.
    OffsetOutOfRange = 1,
    /// `CORRUPT_MESSAGE`.
    CorruptMessage = 2,
    /// `UNKNOWN_TOPIC_OR_PARTITION`.
    UnknownTopicOrPartition = 3,
    /// `INVALID_FETCH_SIZE`.
    InvalidFetchSize = 4,
    /// `LEADER_NOT_AVAILABLE`.
    LeaderNotAvailable = 5,
    /// `NOT_LEADER_OR_FOLLOWER`.
    NotLeaderOrFollower = 6,
    /// `REQUEST_TIMED_OUT`.
    RequestTimedOut = 7,
    /// `BROKER_NOT_AVAILABLE`.
    BrokerNotAvailable = 8,
    /// `REPLICA_NOT_AVAILABLE`.
    ReplicaNotAvailable = 9,
    /// `MESSAGE_TOO_LARGE`.
    MessageTooLarge = 10,
    /// `STALE_CONTROLLER_EPOCH`.
    StaleControllerEpoch = 11,
    /// `OFFSET_METADATA_TOO_LARGE`.
    OffsetMetadataTooLarge = 12,
    /// `NETWORK_EXCEPTION`.
    NetworkException = 13,
    /// `COORDINATOR_LOAD_IN_PROGRESS`.
    CoordinatorLoadInProgress = 14,
    /// `COORDINATOR_NOT_AVAILABLE`.
    CoordinatorNotAvailable = 15,
    /// `NOT_COORDINATOR`.
    NotCoordinator = 16,
    /// `INVALID_TOPIC_EXCEPTION`.
    InvalidTopicException = 17,
    /// `RECORD_LIST_TOO_LARGE`.
    RecordListTooLarge = 18,
    /// `NOT_ENOUGH_REPLICAS`.
    NotEnoughReplicas = 19,
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`.
    NotEnoughReplicasAfterAppend = 20,
    /// `INVALID_REQUIRED_ACKS`.
    InvalidRequiredAcks = 21,
    /// `ILLEGAL_GENERATION`.
    IllegalGeneration = 22,
    /// `INCONSISTENT_GROUP_PROTOCOL`.
    InconsistentGroupProtocol = 23,
    /// `INVALID_GROUP_ID`.
    InvalidGroupId = 24,
    /// `UNKNOWN_MEMBER_ID`.
    UnknownMemberId = 25,
    /// `INVALID_SESSION_TIMEOUT`.
    InvalidSessionTimeout = 26,
    /// `REBALANCE_IN_PROGRESS`.
    RebalanceInProgress = 27,
    /// `INVALID_COMMIT_OFFSET_SIZE`.
    InvalidCommitOffsetSize = 28,
    /// `TOPIC_AUTHORIZATION_FAILED`.
    TopicAuthorizationFailed = 29,
    /// `GROUP_AUTHORIZATION_FAILED`.
    GroupAuthorizationFailed = 30,
    /// `CLUSTER_AUTHORIZATION_FAILED`.
    ClusterAuthorizationFailed = 31,
    /// `INVALID_TIMESTAMP`.
    InvalidTimestamp = 32,
    /// `UNSUPPORTED_SASL_MECHANISM`.
    UnsupportedSaslMechanism = 33,
    /// `ILLEGAL_SASL_STATE`.
    IllegalSaslState = 34,
    /// `UNSUPPORTED_VERSION`.
    UnsupportedVersion = 35,
    /// `TOPIC_ALREADY_EXISTS`.
    TopicAlreadyExists = 36,
    /// `INVALID_PARTITIONS`.
    InvalidPartitions = 37,
    /// `INVALID_REPLICATION_FACTOR`.
    InvalidReplicationFactor = 38,
    /// `INVALID_REPLICA_ASSIGNMENT`.
    InvalidReplicaAssignment = 39,
    /// `INVALID_CONFIG`.
    InvalidConfig = 40,
    /// `NOT_CONTROLLER`.
    NotController = 41,
    /// `INVALID_REQUEST`.
    InvalidRequest = 42,
    /// `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
    UnsupportedForMessageFormat = 43,
    /// `POLICY_VIOLATION`.
    PolicyViolation = 44,
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`.
    OutOfOrderSequenceNumber = 45,
    /// `DUPLICATE_SEQUENCE_NUMBER`.
    DuplicateSequenceNumber = 46,
    /// `INVALID_PRODUCER_EPOCH`.
    InvalidProducerEpoch = 47,
    /// `INVALID_TXN_STATE`.
    InvalidTxnState = 48,
    /// `INVALID_PRODUCER_ID_MAPPING`.
    InvalidProducerIdMapping = 49,
    /// `INVALID_TRANSACTION_TIMEOUT`.
    InvalidTransactionTimeout = 50,
    /// `CONCURRENT_TRANSACTIONS`.
    ConcurrentTransactions = 51,
    /// `TRANSACTION_COORDINATOR_FENCED`.
    TransactionCoordinatorFenced = 52,
    /// `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`.
    TransactionalIdAuthorizationFailed = 53,
    /// `SECURITY_DISABLED`.
    SecurityDisabled = 54,
    /// `OPERATION_NOT_ATTEMPTED`.
    OperationNotAttempted = 55,
    /// `KAFKA_STORAGE_ERROR`.
    KafkaStorageError = 56,
    /// `LOG_DIR_NOT_FOUND`.
    LogDirNotFound = 57,
    /// `SASL_AUTHENTICATION_FAILED`.
    SaslAuthenticationFailed = 58,
    /// `UNKNOWN_PRODUCER_ID`.
    UnknownProducerId = 59,
    /// `REASSIGNMENT_IN_PROGRESS`.
    ReassignmentInProgress = 60,
    /// `DELEGATION_TOKEN_AUTH_DISABLED`.
    DelegationTokenAuthDisabled = 61,
    /// `DELEGATION_TOKEN_NOT_FOUND`.
    DelegationTokenNotFound = 62,
    /// `DELEGATION_TOKEN_OWNER_MISMATCH`.
    DelegationTokenOwnerMismatch = 63,
    /// `DELEGATION_TOKEN_REQUEST_NOT_ALLOWED`.
    DelegationTokenRequestNotAllowed = 64,
    /// `DELEGATION_TOKEN_AUTHORIZATION_FAILED`.
    DelegationTokenAuthorizationFailed = 65,
    /// `DELEGATION_TOKEN_EXPIRED`.
    DelegationTokenExpired = 66,
    /// `INVALID_PRINCIPAL_TYPE`.
    InvalidPrincipalType = 67,
    /// `NON_EMPTY_GROUP`.
    NonEmptyGroup = 68,
    /// `GROUP_ID_NOT_FOUND`.
    GroupIdNotFound = 69,
    /// `FETCH_SESSION_ID_NOT_FOUND`.
    FetchSessionIdNotFound = 70,
    /// `INVALID_FETCH_SESSION_EPOCH`.
    InvalidFetchSessionEpoch = 71,
    /// `LISTENER_NOT_FOUND`.
    ListenerNotFound = 72,
    /// `TOPIC_DELETION_DISABLED`.
    TopicDeletionDisabled = 73,
    /// `FENCED_LEADER_EPOCH`.
    FencedLeaderEpoch = 74,
    /// `UNKNOWN_LEADER_EPOCH`.
    UnknownLeaderEpoch = 75,
    /// `UNSUPPORTED_COMPRESSION_TYPE`.
    UnsupportedCompressionType = 76,
    /// `STALE_BROKER_EPOCH`.
    StaleBrokerEpoch = 77,
    /// `OFFSET_NOT_AVAILABLE`.
    OffsetNotAvailable = 78,
    /// `MEMBER_ID_REQUIRED`.
    MemberIdRequired = 79,
    /// `PREFERRED_LEADER_NOT_AVAILABLE`.
    PreferredLeaderNotAvailable = 80,
    /// `GROUP_MAX_SIZE_REACHED`.
    GroupMaxSizeReached = 81,
    /// `FENCED_INSTANCE_ID`.
    FencedInstanceId = 82,
    /// `ELIGIBLE_LEADERS_NOT_AVAILABLE`.
    EligibleLeadersNotAvailable = 83,
    /// `ELECTION_NOT_NEEDED`.
    ElectionNotNeeded = 84,
    /// `NO_REASSIGNMENT_IN_PROGRESS`.
    NoReassignmentInProgress = 85,
    /// `GROUP_SUBSCRIBED_TO_TOPIC`.
    GroupSubscribedToTopic = 86,
    /// `INVALID_RECORD`.
    InvalidRecord = 87,
    /// `UNSTABLE_OFFSET_COMMIT`.
    UnstableOffsetCommit = 88,
    /// `THROTTLING_QUOTA_EXCEEDED`.
    ThrottlingQuotaExceeded = 89,
    /// `PRODUCER_FENCED`.
    ProducerFenced = 90,
    /// `RESOURCE_NOT_FOUND`.
    ResourceNotFound = 91,
    /// `DUPLICATE_RESOURCE`.
    DuplicateResource = 92,
    /// `UNACCEPTABLE_CREDENTIAL`.
    UnacceptableCredential = 93,
    /// `INCONSISTENT_VOTER_SET`.
    InconsistentVoterSet = 94,
    /// `INVALID_UPDATE_VERSION`.
    InvalidUpdateVersion = 95,
    /// `FEATURE_UPDATE_FAILED`.
    FeatureUpdateFailed = 96,
    /// `PRINCIPAL_DESERIALIZATION_FAILURE`.
    PrincipalDeserializationFailure = 97,
    /// `SNAPSHOT_NOT_FOUND`.
    SnapshotNotFound = 98,
    /// `POSITION_OUT_OF_RANGE`.
    PositionOutOfRange = 99,
    /// `UNKNOWN_TOPIC_ID`.
    UnknownTopicId = 100,
    /// `DUPLICATE_BROKER_REGISTRATION`.
    DuplicateBrokerRegistration = 101,
    /// `BROKER_ID_NOT_REGISTERED`.
    BrokerIdNotRegistered = 102,
    /// `INCONSISTENT_TOPIC_ID`.
    InconsistentTopicId = 103,
    /// `INCONSISTENT_CLUSTER_ID`.
    InconsistentClusterId = 104,
    /// `TRANSACTIONAL_ID_NOT_FOUND`.
    TransactionalIdNotFound = 105,
    /// `FETCH_SESSION_TOPIC_ID_ERROR`.
    FetchSessionTopicIdError = 106,
    /// `INELIGIBLE_REPLICA`.
    IneligibleReplica = 107,
    /// `NEW_LEADER_ELECTED`.
    NewLeaderElected = 108,
}

impl ErrorCode {
    /// Every code this build knows, in number order of the schema.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::None,
        ErrorCode::UnknownServerError,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::CorruptMessage,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::InvalidFetchSize,
        ErrorCode::LeaderNotAvailable,
        ErrorCode::NotLeaderOrFollower,
        ErrorCode::RequestTimedOut,
        ErrorCode::BrokerNotAvailable,
        ErrorCode::ReplicaNotAvailable,
        ErrorCode::MessageTooLarge,
        ErrorCode::StaleControllerEpoch,
        ErrorCode::OffsetMetadataTooLarge,
        ErrorCode::NetworkException,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::NotCoordinator,
        ErrorCode::InvalidTopicException,
        ErrorCode::RecordListTooLarge,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::NotEnoughReplicasAfterAppend,
        ErrorCode::InvalidRequiredAcks,
        ErrorCode::IllegalGeneration,
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidGroupId,
        ErrorCode::UnknownMemberId,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::RebalanceInProgress,
        ErrorCode::InvalidCommitOffsetSize,
        ErrorCode::TopicAuthorizationFailed,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::ClusterAuthorizationFailed,
        ErrorCode::InvalidTimestamp,
        ErrorCode::UnsupportedSaslMechanism,
        ErrorCode::IllegalSaslState,
        ErrorCode::UnsupportedVersion,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidPartitions,
        ErrorCode::InvalidReplicationFactor,
        ErrorCode::InvalidReplicaAssignment,
        ErrorCode::InvalidConfig,
        ErrorCode::NotController,
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedForMessageFormat,
        ErrorCode::PolicyViolation,
        ErrorCode::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequenceNumber,
        ErrorCode::InvalidProducerEpoch,
        ErrorCode::InvalidTxnState,
        ErrorCode::InvalidProducerIdMapping,
        ErrorCode::InvalidTransactionTimeout,
        ErrorCode::ConcurrentTransactions,
        ErrorCode::TransactionCoordinatorFenced,
        ErrorCode::TransactionalIdAuthorizationFailed,
        ErrorCode::SecurityDisabled,
        ErrorCode::OperationNotAttempted,
        ErrorCode::KafkaStorageError,
        ErrorCode::LogDirNotFound,
        ErrorCode::SaslAuthenticationFailed,
        ErrorCode::UnknownProducerId,
        ErrorCode::ReassignmentInProgress,
        ErrorCode::DelegationTokenAuthDisabled,
        ErrorCode::DelegationTokenNotFound,
        ErrorCode::DelegationTokenOwnerMismatch,
        ErrorCode::DelegationTokenRequestNotAllowed,
        ErrorCode::DelegationTokenAuthorizationFailed,
        ErrorCode::DelegationTokenExpired,
        ErrorCode::InvalidPrincipalType,
        ErrorCode::NonEmptyGroup,
        ErrorCode::GroupIdNotFound,
        ErrorCode::FetchSessionIdNotFound,
        ErrorCode::InvalidFetchSessionEpoch,
        ErrorCode::ListenerNotFound,
        ErrorCode::TopicDeletionDisabled,
        ErrorCode::FencedLeaderEpoch,
        ErrorCode::UnknownLeaderEpoch,
        ErrorCode::UnsupportedCompressionType,
        ErrorCode::StaleBrokerEpoch,
        ErrorCode::OffsetNotAvailable,
        ErrorCode::MemberIdRequired,
        ErrorCode::PreferredLeaderNotAvailable,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
        ErrorCode::EligibleLeadersNotAvailable,
        ErrorCode::ElectionNotNeeded,
        ErrorCode::NoReassignmentInProgress,
        ErrorCode::GroupSubscribedToTopic,
        ErrorCode::InvalidRecord,
        ErrorCode::UnstableOffsetCommit,
        ErrorCode::ThrottlingQuotaExceeded,
        ErrorCode::ProducerFenced,
        ErrorCode::ResourceNotFound,
        ErrorCode::DuplicateResource,
        ErrorCode::UnacceptableCredential,
        ErrorCode::InconsistentVoterSet,
        ErrorCode::InvalidUpdateVersion,
        ErrorCode::FeatureUpdateFailed,
        ErrorCode::PrincipalDeserializationFailure,
        ErrorCode::SnapshotNotFound,
        ErrorCode::PositionOutOfRange,
        ErrorCode::UnknownTopicId,
        ErrorCode::DuplicateBrokerRegistration,
        ErrorCode::BrokerIdNotRegistered,
        ErrorCode::InconsistentTopicId,
        ErrorCode::InconsistentClusterId,
        ErrorCode::TransactionalIdNotFound,
        ErrorCode::FetchSessionTopicIdError,
        ErrorCode::IneligibleReplica,
        ErrorCode::NewLeaderElected,
    ];

    /// Kafka's number for the code.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The code with Kafka's number `code`, if this build knows it.
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        match code {
            0 => Some(ErrorCode::None),
            -1 => Some(ErrorCode::UnknownServerError),
            1 => Some(ErrorCode::OffsetOutOfRange),
            2 => Some(ErrorCode::CorruptMessage),
            3 => Some(ErrorCode::UnknownTopicOrPartition),
            4 => Some(ErrorCode::InvalidFetchSize),
            5 => Some(ErrorCode::LeaderNotAvailable),
            6 => Some(ErrorCode::NotLeaderOrFollower),
            7 => Some(ErrorCode::RequestTimedOut),
            8 => Some(ErrorCode::BrokerNotAvailable),
            9 => Some(ErrorCode::ReplicaNotAvailable),
            10 => Some(ErrorCode::MessageTooLarge),
            11 => Some(ErrorCode::StaleControllerEpoch),
            12 => Some(ErrorCode::OffsetMetadataTooLarge),
            13 => Some(ErrorCode::NetworkException),
            14 => Some(ErrorCode::CoordinatorLoadInProgress),
            15 => Some(ErrorCode::CoordinatorNotAvailable),
            16 => Some(ErrorCode::NotCoordinator),
            17 => Some(ErrorCode::InvalidTopicException),
            18 => Some(ErrorCode::RecordListTooLarge),
            19 => Some(ErrorCode::NotEnoughReplicas),
            20 => Some(ErrorCode::NotEnoughReplicasAfterAppend),
            21 => Some(ErrorCode::InvalidRequiredAcks),
            22 => Some(ErrorCode::IllegalGeneration),
            23 => Some(ErrorCode::InconsistentGroupProtocol),
            24 => Some(ErrorCode::InvalidGroupId),
            25 => Some(ErrorCode::UnknownMemberId),
            26 => Some(ErrorCode::InvalidSessionTimeout),
            27 => Some(ErrorCode::RebalanceInProgress),
            28 => Some(ErrorCode::InvalidCommitOffsetSize),
            29 => Some(ErrorCode::TopicAuthorizationFailed),
            30 => Some(ErrorCode::GroupAuthorizationFailed),
            31 => Some(ErrorCode::ClusterAuthorizationFailed),
            32 => Some(ErrorCode::InvalidTimestamp),
            33 => Some(ErrorCode::UnsupportedSaslMechanism),
            34 => Some(ErrorCode::IllegalSaslState),
            35 => Some(ErrorCode::UnsupportedVersion),
            36 => Some(ErrorCode::TopicAlreadyExists),
            37 => Some(ErrorCode::InvalidPartitions),
            38 => Some(ErrorCode::InvalidReplicationFactor),
            39 => Some(ErrorCode::InvalidReplicaAssignment),
            40 => Some(ErrorCode::InvalidConfig),
            41 => Some(ErrorCode::NotController),
            42 => Some(ErrorCode::InvalidRequest),
            43 => Some(ErrorCode::UnsupportedForMessageFormat),
            44 => Some(ErrorCode::PolicyViolation),
            45 => Some(ErrorCode::OutOfOrderSequenceNumber),
            46 => Some(ErrorCode::DuplicateSequenceNumber),
            47 => Some(ErrorCode::InvalidProducerEpoch),
            48 => Some(ErrorCode::InvalidTxnState),
            49 => Some(ErrorCode::InvalidProducerIdMapping),
            50 => Some(ErrorCode::InvalidTransactionTimeout),
            51 => Some(ErrorCode::ConcurrentTransactions),
            52 => Some(ErrorCode::TransactionCoordinatorFenced),
            53 => Some(ErrorCode::TransactionalIdAuthorizationFailed),
            54 => Some(ErrorCode::SecurityDisabled),
            55 => Some(ErrorCode::OperationNotAttempted),
            56 => Some(ErrorCode::KafkaStorageError),
            57 => Some(ErrorCode::LogDirNotFound),
            58 => Some(ErrorCode::SaslAuthenticationFailed),
            59 => Some(ErrorCode::UnknownProducerId),
            60 => Some(ErrorCode::ReassignmentInProgress),
            61 => Some(ErrorCode::DelegationTokenAuthDisabled),
            62 => Some(ErrorCode::DelegationTokenNotFound),
            63 => Some(ErrorCode::DelegationTokenOwnerMismatch),
            64 => Some(ErrorCode::DelegationTokenRequestNotAllowed),
            65 => Some(ErrorCode::DelegationTokenAuthorizationFailed),
            66 => Some(ErrorCode::DelegationTokenExpired),
            67 => Some(ErrorCode::InvalidPrincipalType),
            68 => Some(ErrorCode::NonEmptyGroup),
            69 => Some(ErrorCode::GroupIdNotFound),
            70 => Some(ErrorCode::FetchSessionIdNotFound),
            71 => Some(ErrorCode::InvalidFetchSessionEpoch),
            72 => Some(ErrorCode::ListenerNotFound),
            73 => Some(ErrorCode::TopicDeletionDisabled),
            74 => Some(ErrorCode::FencedLeaderEpoch),
            75 => Some(ErrorCode::UnknownLeaderEpoch),
            76 => Some(ErrorCode::UnsupportedCompressionType),
            77 => Some(ErrorCode::StaleBrokerEpoch),
            78 => Some(ErrorCode::OffsetNotAvailable),
            79 => Some(ErrorCode::MemberIdRequired),
            80 => Some(ErrorCode::PreferredLeaderNotAvailable),
            81 => Some(ErrorCode::GroupMaxSizeReached),
            82 => Some(ErrorCode::FencedInstanceId),
            83 => Some(ErrorCode::EligibleLeadersNotAvailable),
            84 => Some(ErrorCode::ElectionNotNeeded),
            85 => Some(ErrorCode::NoReassignmentInProgress),
            86 => Some(ErrorCode::GroupSubscribedToTopic),
            87 => Some(ErrorCode::InvalidRecord),
            88 => Some(ErrorCode::UnstableOffsetCommit),
            89 => Some(ErrorCode::ThrottlingQuotaExceeded),
            90 => Some(ErrorCode::ProducerFenced),
            91 => Some(ErrorCode::ResourceNotFound),
            92 => Some(ErrorCode::DuplicateResource),
            93 => Some(ErrorCode::UnacceptableCredential),
            94 => Some(ErrorCode::InconsistentVoterSet),
            95 => Some(ErrorCode::InvalidUpdateVersion),
            96 => Some(ErrorCode::FeatureUpdateFailed),
            97 => Some(ErrorCode::PrincipalDeserializationFailure),
            98 => Some(ErrorCode::SnapshotNotFound),
            99 => Some(ErrorCode::PositionOutOfRange),
            100 => Some(ErrorCode::UnknownTopicId),
            101 => Some(ErrorCode::DuplicateBrokerRegistration),
            102 => Some(ErrorCode::BrokerIdNotRegistered),
            103 => Some(ErrorCode::InconsistentTopicId),
            104 => Some(ErrorCode::InconsistentClusterId),
            105 => Some(ErrorCode::TransactionalIdNotFound),
            106 => Some(ErrorCode::FetchSessionTopicIdError),
            107 => Some(ErrorCode::IneligibleReplica),
            108 => Some(ErrorCode::NewLeaderElected),
            _ => None,
        }
    }

    /// Kafka's name for the code (`NOT_LEADER_OR_FOLLOWER`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "NONE",
            ErrorCode::UnknownServerError => "UNKNOWN_SERVER_ERROR",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::CorruptMessage => "CORRUPT_MESSAGE",
            ErrorCode::UnknownTopicOrPartition => "UNKNOWN_TOPIC_OR_PARTITION",
            ErrorCode::InvalidFetchSize => "INVALID_FETCH_SIZE",
            ErrorCode::LeaderNotAvailable => "LEADER_NOT_AVAILABLE",
            ErrorCode::NotLeaderOrFollower => "NOT_LEADER_OR_FOLLOWER",
            ErrorCode::RequestTimedOut => "REQUEST_TIMED_OUT",
            ErrorCode::BrokerNotAvailable => "BROKER_NOT_AVAILABLE",
            ErrorCode::ReplicaNotAvailable => "REPLICA_NOT_AVAILABLE",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::StaleControllerEpoch => "STALE_CONTROLLER_EPOCH",
            ErrorCode::OffsetMetadataTooLarge => "OFFSET_METADATA_TOO_LARGE",
            ErrorCode::NetworkException => "NETWORK_EXCEPTION",
            ErrorCode::CoordinatorLoadInProgress => "COORDINATOR_LOAD_IN_PROGRESS",
            ErrorCode::CoordinatorNotAvailable => "COORDINATOR_NOT_AVAILABLE",
            ErrorCode::NotCoordinator => "NOT_COORDINATOR",
            ErrorCode::InvalidTopicException => "INVALID_TOPIC_EXCEPTION",
            ErrorCode::RecordListTooLarge => "RECORD_LIST_TOO_LARGE",
            ErrorCode::NotEnoughReplicas => "NOT_ENOUGH_REPLICAS",
            ErrorCode::NotEnoughReplicasAfterAppend => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
            ErrorCode::InvalidRequiredAcks => "INVALID_REQUIRED_ACKS",
            ErrorCode::IllegalGeneration => "ILLEGAL_GENERATION",
            ErrorCode::InconsistentGroupProtocol => "INCONSISTENT_GROUP_PROTOCOL",
            ErrorCode::InvalidGroupId => "INVALID_GROUP_ID",
            ErrorCode::UnknownMemberId => "UNKNOWN_MEMBER_ID",
            ErrorCode::InvalidSessionTimeout => "INVALID_SESSION_TIMEOUT",
            ErrorCode::RebalanceInProgress => "REBALANCE_IN_PROGRESS",
            ErrorCode::InvalidCommitOffsetSize => "INVALID_COMMIT_OFFSET_SIZE",
            ErrorCode::TopicAuthorizationFailed => "TOPIC_AUTHORIZATION_FAILED",
            ErrorCode::GroupAuthorizationFailed => "GROUP_AUTHORIZATION_FAILED",
            ErrorCode::ClusterAuthorizationFailed => "CLUSTER_AUTHORIZATION_FAILED",
            ErrorCode::InvalidTimestamp => "INVALID_TIMESTAMP",
            ErrorCode::UnsupportedSaslMechanism => "UNSUPPORTED_SASL_MECHANISM",
            ErrorCode::IllegalSaslState => "ILLEGAL_SASL_STATE",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::TopicAlreadyExists => "TOPIC_ALREADY_EXISTS",
            ErrorCode::InvalidPartitions => "INVALID_PARTITIONS",
            ErrorCode::InvalidReplicationFactor => "INVALID_REPLICATION_FACTOR",
            ErrorCode::InvalidReplicaAssignment => "INVALID_REPLICA_ASSIGNMENT",
            ErrorCode::InvalidConfig => "INVALID_CONFIG",
            ErrorCode::NotController => "NOT_CONTROLLER",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnsupportedForMessageFormat => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
            ErrorCode::PolicyViolation => "POLICY_VIOLATION",
            ErrorCode::OutOfOrderSequenceNumber => "OUT_OF_ORDER_SEQUENCE_NUMBER",
            ErrorCode::DuplicateSequenceNumber => "DUPLICATE_SEQUENCE_NUMBER",
            ErrorCode::InvalidProducerEpoch => "INVALID_PRODUCER_EPOCH",
            ErrorCode::InvalidTxnState => "INVALID_TXN_STATE",
            ErrorCode::InvalidProducerIdMapping => "INVALID_PRODUCER_ID_MAPPING",
            ErrorCode::InvalidTransactionTimeout => "INVALID_TRANSACTION_TIMEOUT",
            ErrorCode::ConcurrentTransactions => "CONCURRENT_TRANSACTIONS",
            ErrorCode::TransactionCoordinatorFenced => "TRANSACTION_COORDINATOR_FENCED",
            ErrorCode::TransactionalIdAuthorizationFailed => {
                "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"
            }
            ErrorCode::SecurityDisabled => "SECURITY_DISABLED",
            ErrorCode::OperationNotAttempted => "OPERATION_NOT_ATTEMPTED",
            ErrorCode::KafkaStorageError => "KAFKA_STORAGE_ERROR",
            ErrorCode::LogDirNotFound => "LOG_DIR_NOT_FOUND",
            ErrorCode::SaslAuthenticationFailed => "SASL_AUTHENTICATION_FAILED",
            ErrorCode::UnknownProducerId => "UNKNOWN_PRODUCER_ID",
            ErrorCode::ReassignmentInProgress => "REASSIGNMENT_IN_PROGRESS",
            ErrorCode::DelegationTokenAuthDisabled => "DELEGATION_TOKEN_AUTH_DISABLED",
            ErrorCode::DelegationTokenNotFound => "DELEGATION_TOKEN_NOT_FOUND",
            ErrorCode::DelegationTokenOwnerMismatch => "DELEGATION_TOKEN_OWNER_MISMATCH",
            ErrorCode::DelegationTokenRequestNotAllowed => "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
            ErrorCode::DelegationTokenAuthorizationFailed => {
                "DELEGATION_TOKEN_AUTHORIZATION_FAILED"
            }
            ErrorCode::DelegationTokenExpired => "DELEGATION_TOKEN_EXPIRED",
            ErrorCode::InvalidPrincipalType => "INVALID_PRINCIPAL_TYPE",
            ErrorCode::NonEmptyGroup => "NON_EMPTY_GROUP",
            ErrorCode::GroupIdNotFound => "GROUP_ID_NOT_FOUND",
            ErrorCode::FetchSessionIdNotFound => "FETCH_SESSION_ID_NOT_FOUND",
            ErrorCode::InvalidFetchSessionEpoch => "INVALID_FETCH_SESSION_EPOCH",
            ErrorCode::ListenerNotFound => "LISTENER_NOT_FOUND",
            ErrorCode::TopicDeletionDisabled => "TOPIC_DELETION_DISABLED",
            ErrorCode::FencedLeaderEpoch => "FENCED_LEADER_EPOCH",
            ErrorCode::UnknownLeaderEpoch => "UNKNOWN_LEADER_EPOCH",
            ErrorCode::UnsupportedCompressionType => "UNSUPPORTED_COMPRESSION_TYPE",
            ErrorCode::StaleBrokerEpoch => "STALE_BROKER_EPOCH",
            ErrorCode::OffsetNotAvailable => "OFFSET_NOT_AVAILABLE",
            ErrorCode::MemberIdRequired => "MEMBER_ID_REQUIRED",
            ErrorCode::PreferredLeaderNotAvailable => "PREFERRED_LEADER_NOT_AVAILABLE",
            ErrorCode::GroupMaxSizeReached => "GROUP_MAX_SIZE_REACHED",
            ErrorCode::FencedInstanceId => "FENCED_INSTANCE_ID",
            ErrorCode::EligibleLeadersNotAvailable => "ELIGIBLE_LEADERS_NOT_AVAILABLE",
            ErrorCode::ElectionNotNeeded => "ELECTION_NOT_NEEDED",
            ErrorCode::NoReassignmentInProgress => "NO_REASSIGNMENT_IN_PROGRESS",
            ErrorCode::GroupSubscribedToTopic => "GROUP_SUBSCRIBED_TO_TOPIC",
            ErrorCode::InvalidRecord => "INVALID_RECORD",
            ErrorCode::UnstableOffsetCommit => "UNSTABLE_OFFSET_COMMIT",
            ErrorCode::ThrottlingQuotaExceeded => "THROTTLING_QUOTA_EXCEEDED",
            ErrorCode::ProducerFenced => "PRODUCER_FENCED",
            ErrorCode::ResourceNotFound => "RESOURCE_NOT_FOUND",
            ErrorCode::DuplicateResource => "DUPLICATE_RESOURCE",
            ErrorCode::UnacceptableCredential => "UNACCEPTABLE_CREDENTIAL",
            ErrorCode::InconsistentVoterSet => "INCONSISTENT_VOTER_SET",
            ErrorCode::InvalidUpdateVersion => "INVALID_UPDATE_VERSION",
            ErrorCode::FeatureUpdateFailed => "FEATURE_UPDATE_FAILED",
            ErrorCode::PrincipalDeserializationFailure => "PRINCIPAL_DESERIALIZATION_FAILURE",
            ErrorCode::SnapshotNotFound => "SNAPSHOT_NOT_FOUND",
            ErrorCode::PositionOutOfRange => "POSITION_OUT_OF_RANGE",
            ErrorCode::UnknownTopicId => "UNKNOWN_TOPIC_ID",
            ErrorCode::DuplicateBrokerRegistration => "DUPLICATE_BROKER_REGISTRATION",
            ErrorCode::BrokerIdNotRegistered => "BROKER_ID_NOT_REGISTERED",
            ErrorCode::InconsistentTopicId => "INCONSISTENT_TOPIC_ID",
            ErrorCode::InconsistentClusterId => "INCONSISTENT_CLUSTER_ID",
            ErrorCode::TransactionalIdNotFound => "TRANSACTIONAL_ID_NOT_FOUND",
            ErrorCode::FetchSessionTopicIdError => "FETCH_SESSION_TOPIC_ID_ERROR",
            ErrorCode::IneligibleReplica => "INELIGIBLE_REPLICA",
            ErrorCode::NewLeaderElected => "NEW_LEADER_ELECTED",
        }
    }

    /// Whether retrying the same request may succeed: Kafka's `RetriableException` family
    /// (leadership moved, not enough replicas yet, a coordinator loading, a timeout), with the
    /// same one deliberate difference as the gRPC API: CORRUPT_MESSAGE is not retriable.
    pub fn is_retriable(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            UnknownTopicOrPartition
                | LeaderNotAvailable
                | NotLeaderOrFollower
                | RequestTimedOut
                | BrokerNotAvailable
                | ReplicaNotAvailable
                | NetworkException
                | CoordinatorLoadInProgress
                | CoordinatorNotAvailable
                | NotCoordinator
                | NotEnoughReplicas
                | NotEnoughReplicasAfterAppend
                | NotController
                | ConcurrentTransactions
                | KafkaStorageError
                | FencedLeaderEpoch
                | UnknownLeaderEpoch
                | OffsetNotAvailable
                | PreferredLeaderNotAvailable
                | EligibleLeadersNotAvailable
                | UnstableOffsetCommit
                | ThrottlingQuotaExceeded
                | UnknownTopicId
                | InconsistentTopicId
                | FetchSessionTopicIdError
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_kafkas() {
        assert_eq!(ErrorCode::UnknownServerError.code(), -1);
        assert_eq!(ErrorCode::None.code(), 0);
        assert_eq!(ErrorCode::NotCoordinator.code(), 16);
        assert_eq!(ErrorCode::MemberIdRequired.code(), 79);
        assert_eq!(ErrorCode::FencedInstanceId.name(), "FENCED_INSTANCE_ID");
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code().into()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(10_000), None);
    }
}
