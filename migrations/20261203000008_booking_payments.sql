-- Payments through a provider and refunds (issue 15): the new booking statuses get their milestone
-- columns in the bookings read model, like every other status (when the booking first entered it).
alter table rm_bookings
    add column payment_pending_at timestamptz,
    add column refunding_at       timestamptz,
    add column refunded_at        timestamptz,
    add column refund_failed_at   timestamptz;
comment on column rm_bookings.payment_pending_at is 'When the booking first waited for the payment provider.';
comment on column rm_bookings.refunded_at is 'When the payment of the cancelled booking was refunded.';

-- Repair of leaked slot claims. Before this release the workers appended booking events without the
-- slot rule, so a booking that became rejected, failed or cancelled (compensated) through a job kept its
-- claim and its room could never be booked again for that period. Every booking whose stream holds one
-- of these events is in a status that never holds a slot again (no transition leads back), so its claim
-- is released here, exactly as the rule would have done.
delete from resource_claims c
where exists (
    select 1 from events e
    where e.aggregate_type = 'booking' and e.aggregate_id = c.booking_id
      and e.event_type in ('PartnerRejected', 'BookingFailed', 'BookingCancelled',
                           'CompensationCompleted', 'CompensationFailed')
);
