-- One row per customer account: gross and net lifetime value, average order value and tenure.
select
    customers.customer_id,
    customers.created_at as signed_up_at,
    orders.first_order_date,
    orders.last_order_date,
    coalesce(orders.order_count, 0) as order_count,
    coalesce(orders.revenue_order_count, 0) as revenue_order_count,
    coalesce(orders.lifetime_value, 0) as lifetime_value,
    coalesce(orders.net_lifetime_value, 0) as net_lifetime_value,
    {{ round_float('orders.lifetime_value / nullif(orders.revenue_order_count, 0)', 2) }} as average_order_value,
    {{ dbt.datediff('orders.first_order_date', 'orders.last_order_date', 'day') }} as active_days
from {{ ref('stg_shop_db__customers') }} as customers
left join {{ ref('int_customer_orders') }} as orders on orders.customer_id = customers.customer_id
