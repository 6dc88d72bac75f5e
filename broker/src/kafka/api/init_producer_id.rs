//! InitProducerId: a fresh producer id (epoch 0) for an idempotent producer.
//!
//! Transactions are not served yet: a request carrying a transactional id
//! gets COORDINATOR_NOT_AVAILABLE, as from a broker with no transaction
//! coordinator.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::blocking;
use crate::kafka::State;

/// Allocates a producer id.
pub(super) fn handle(
    state: &State,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(ResponseError::CoordinatorNotAvailable.code());
    }
    match blocking(|| state.producers.allocate()) {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!("allocating a producer id failed: {e}");
            response.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
