package events

// Rejection codes carried by CommandRejected.Code. They are part of the
// contract: clients branch on them, so a code never changes meaning.
const (
	// The command cannot be carried out as sent.
	CodeUnknownUser     = "unknown_user"     // the order's user is not registered
	CodeEmptyOrder      = "empty_order"      // an order needs at least one line
	CodeInvalidQuantity = "invalid_quantity" // a line's quantity is not positive
	CodeInvalidPrice    = "invalid_price"    // a line's unit price is negative
	CodeAmountMismatch  = "amount_mismatch"  // a payment must equal the order total
	CodeInvalidCommand  = "invalid_command"  // a field the rules need is missing or malformed

	// The aggregate's state forbids the command.
	CodeOrderNotFound    = "order_not_found"    // no order with that id
	CodeOrderExists      = "order_exists"       // an order with that id was already placed
	CodeUserExists       = "user_exists"        // a user with that id was already registered
	CodeOrderCancelled   = "order_cancelled"    // the order was cancelled
	CodeOrderAlreadyPaid = "order_already_paid" // the order was paid before
	CodeOrderNotPaid     = "order_not_paid"     // shipping needs a paid order
	CodeOrderShipped     = "order_shipped"      // the order has left the warehouse
	CodeOrderNotDue      = "order_not_due"      // an expiry of an order placed after its cutoff
	CodeSalesDayClosed   = "sales_day_closed"   // the day's sales were closed before
)

// RejectionIsConflict reports whether a rejection code means the aggregate's
// current state forbade the command (HTTP 409), as opposed to the command
// itself being unacceptable (HTTP 422) or its target missing (404).
func RejectionIsConflict(code string) bool {
	switch code {
	case CodeOrderExists, CodeUserExists, CodeOrderCancelled, CodeOrderAlreadyPaid, CodeOrderNotPaid, CodeOrderShipped,
		CodeOrderNotDue, CodeSalesDayClosed:
		return true
	}
	return false
}
